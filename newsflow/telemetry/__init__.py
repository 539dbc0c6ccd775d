"""Operating newsflow: live metrics, their HTTP endpoint, consumer lag, structured logs.

- :mod:`newsflow.telemetry.instruments`  the metrics and the hooks that record them (one place)
- :mod:`newsflow.telemetry.server`       the HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``
- :mod:`newsflow.telemetry.lag`          samples the enrich group's consumer lag from the broker
- :mod:`newsflow.telemetry.runners`      whether a Beam runner runs the pipeline's workers in this process
- :mod:`newsflow.telemetry.logs`         text or JSON log lines, with run context, secrets masked

Nothing in :mod:`newsflow.config`, :mod:`newsflow.records` or :mod:`newsflow.errors` imports these.
"""
