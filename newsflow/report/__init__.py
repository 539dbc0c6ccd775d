"""``newsflow report``: an analyst's page of what the pipeline saw over time.

One job per module:

- :mod:`newsflow.report.sources`    enriched records from the file sink or PostgreSQL; feed health
                                    from ``news.feed-health`` and the ingest state
- :mod:`newsflow.report.aggregate`  counts per topic, claim, source and time bucket, each with the
                                    ids of the records it counts (pure functions)
- :mod:`newsflow.report.charts`     matplotlib charts as PNG bytes
- :mod:`newsflow.report.page`       the self-contained HTML page
- :mod:`newsflow.report.build`      all of the above into ``index.html`` and ``data.json``
"""
