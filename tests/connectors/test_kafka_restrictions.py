"""Offset restrictions that are right on every runner: splits, boundedness, drain, ending early."""

import pytest
from apache_beam.io.restriction_trackers import OffsetRange

from connectors.beam_kafka import PartitionSlice
from connectors.kafka_restrictions import UNBOUNDED_STOP, PartitionRestrictions, PartitionTracker

PROVIDER = PartitionRestrictions()


def test_an_open_ended_range_is_unbounded_and_a_drain_ends_it():
    stream = PROVIDER.initial_restriction(PartitionSlice("t", 0, 40, None))
    batch = PROVIDER.initial_restriction(PartitionSlice("t", 0, 40, 90))
    assert stream == OffsetRange(40, UNBOUNDED_STOP) and batch == OffsetRange(40, 90)
    assert not PROVIDER.create_tracker(stream).is_bounded()
    assert PROVIDER.create_tracker(batch).is_bounded()
    assert PROVIDER.truncate(None, stream) is None  # drain: nothing left to read
    assert PROVIDER.truncate(None, batch) == batch  # a bounded range is finished
    assert list(PROVIDER.split(None, batch)) == [batch]


@pytest.mark.parametrize("stop", [UNBOUNDED_STOP, 1_000])
def test_fractional_splits_are_refused_and_a_checkpoint_starts_at_the_first_unclaimed_offset(stop):
    tracker = PartitionTracker(OffsetRange(10, stop))
    assert tracker.try_claim(10) and tracker.try_claim(11)
    assert tracker.try_split(0.5) is None  # Prism's split of a slow bundle: no offset that may not exist
    assert tracker.try_split(0.01) is None
    primary, residual = tracker.try_split(0)
    assert primary == OffsetRange(10, 12) and residual == OffsetRange(12, stop)
    assert not tracker.try_claim(12)  # the residual's now
    tracker.check_done()


def test_claiming_the_stop_ends_the_range_at_the_first_unclaimed_offset():
    tracker = PartitionTracker(OffsetRange(5, UNBOUNDED_STOP))
    assert tracker.try_claim(5) and tracker.try_claim(7)  # offset 6 has no record (compacted)
    assert not tracker.try_claim(UNBOUNDED_STOP)  # a stop request
    assert tracker.current_restriction() == OffsetRange(5, 8)
    tracker.check_done()
    assert tracker.try_split(0) is None and not tracker.try_claim(9)


def test_unclaimed_work_is_an_error_and_claims_go_forward():
    tracker = PartitionTracker(OffsetRange(0, 10))
    assert tracker.try_claim(3)
    with pytest.raises(ValueError, match="neither claimed nor deferred"):
        tracker.check_done()
    with pytest.raises(ValueError):
        tracker.try_claim(2)
    assert not tracker.try_claim(10)  # past the end: done
    tracker.check_done()
    progress = PartitionTracker(OffsetRange(0, 10))
    progress.try_claim(4)
    assert (progress.current_progress().completed_work, progress.current_progress().remaining_work) == (5, 5)
