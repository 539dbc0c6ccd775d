"""Offset restrictions of one Kafka partition, right on every Beam runner.

A partition's restriction is the offset range ``[start, stop)``: bounded for a scheduled run (stop =
the end offset seen when the run was planned), open-ended for a stream (stop = ``UNBOUNDED_STOP``).
What a runner may do with it, and what :class:`PartitionTracker` answers:

- **Split at a fraction** (Prism splits a slow bundle's restriction in half; Dataflow rebalances
  work): refused. Half of an open-ended range starts at an offset that will never exist (Prism's
  split at 4611686018427387907 made the reader seek there and fail), and a bounded range split
  across workers would let the second half commit the partition's offset while the first half is
  still unwritten. The partition is the unit of parallelism, as in Kafka itself.
- **Checkpoint** (a split at fraction 0: the reader's own ``defer_remainder`` after a bundle's
  records, or a runner's): the primary keeps what was claimed, the residual starts at the first
  unclaimed offset, an offset that exists.
- **Boundedness**: an open-ended range reports unbounded, so runners treat it as a stream and a
  drain truncates it (:meth:`PartitionRestrictions.truncate`: nothing left to do), while a bounded
  range is finished on drain.
- **Ending early**: ``try_claim(stop)`` (the range's own stop) means "no more work here": the range
  ends at the first unclaimed offset, done (a stop request, or a bounded range whose last offsets
  hold no record).
"""

from __future__ import annotations

from typing import Any

from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import MonotonicWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

UNBOUNDED_STOP = 2**63 - 1
UNBOUNDED_SIZE = 1_000_000  # the size an open-ended range reports (its backlog is unknown here)


class PartitionTracker(RestrictionTracker):
    """Claims one partition's offsets in order (see the module docstring for splits and ending)."""

    def __init__(self, restriction: OffsetRange) -> None:
        if restriction.start > restriction.stop:
            raise ValueError(f"an offset range must not end before it starts: {restriction}")
        self._range = restriction
        self._last: int | None = None  # the last offset claimed
        self._done = False  # try_claim(stop) was called, or a claim past the end was attempted

    @property
    def next_offset(self) -> int:
        """The first offset not claimed yet."""
        return self._range.start if self._last is None else self._last + 1

    def current_restriction(self) -> OffsetRange:
        return self._range

    def is_bounded(self) -> bool:
        return bool(self._range.stop != UNBOUNDED_STOP)

    def try_claim(self, position: int) -> bool:
        if position == self._range.stop:  # no more work here: end at the first unclaimed offset
            self._range = OffsetRange(self._range.start, self.next_offset)
            self._done = True
            return False
        if self._done:
            return False
        if position < self.next_offset:
            raise ValueError(f"offset {position} claimed after offset {self._last} in {self._range}")
        if position >= self._range.stop:
            self._done = True
            return False
        self._last = position
        return True

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        if fraction_of_remainder > 0 or self._done:
            return None  # only checkpoints: no offset past what exists, no half-partition elsewhere
        split = self.next_offset
        if split >= self._range.stop:
            return None
        primary, residual = OffsetRange(self._range.start, split), OffsetRange(split, self._range.stop)
        self._range = primary
        return primary, residual

    def check_done(self) -> None:
        if not self._done and self.next_offset < self._range.stop:
            raise ValueError(
                f"offsets {self.next_offset}..{self._range.stop} of {self._range} were neither claimed nor "
                "deferred"
            )

    def current_progress(self) -> RestrictionProgress:
        completed = self.next_offset - self._range.start
        remaining = self._range.stop - self.next_offset if self.is_bounded() else UNBOUNDED_SIZE
        return RestrictionProgress(completed=float(completed), remaining=float(max(0, remaining)))


class PartitionRestrictions(RestrictionProvider):
    """The restriction of a :class:`connectors.beam_kafka.PartitionSlice`: its offsets."""

    def initial_restriction(self, element: Any) -> OffsetRange:
        return OffsetRange(element.start, UNBOUNDED_STOP if element.stop is None else element.stop)

    def create_tracker(self, restriction: OffsetRange) -> PartitionTracker:
        return PartitionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        if restriction.stop == UNBOUNDED_STOP:
            return UNBOUNDED_SIZE
        return int(restriction.size())

    def split(self, element: Any, restriction: OffsetRange) -> Any:
        yield restriction  # one restriction per partition, never split up front

    def truncate(self, element: Any, restriction: OffsetRange) -> OffsetRange | None:
        """On drain: a bounded range is finished, an open-ended one ends (nothing left to read)."""
        return None if restriction.stop == UNBOUNDED_STOP else restriction


class MonotonicWatermarks(WatermarkEstimatorProvider):
    """Watermark = the largest record timestamp seen so far.

    Beam's ``MonotonicWatermarkEstimator.default_provider()`` starts from ``None`` and fails when the
    runner asks for the watermark of a bundle that saw no record (an idle stream); start from the
    minimum timestamp instead.
    """

    def initial_estimator_state(self, element: Any, restriction: OffsetRange) -> Timestamp:
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, estimator_state: Timestamp | None) -> MonotonicWatermarkEstimator:
        return MonotonicWatermarkEstimator(estimator_state if estimator_state is not None else MIN_TIMESTAMP)
