"""The one scrubber: DSN secrets never reach an error text or a log line."""

import logging

from newsflow import scrub


def test_the_password_of_a_dsn_libpq_cannot_parse_is_found_and_masked():
    dsn = "postgresql://writer:p%zzs3cret@db.internal:5432/news"
    secrets = scrub.dsn_secrets(dsn)
    assert "p%zzs3cret" in secrets and dsn in secrets
    libpq = 'invalid percent-encoded token: "p%zzs3cret"'
    assert scrub.scrub(libpq, secrets) == 'invalid percent-encoded token: "***"'


def test_key_value_and_quoted_passwords_are_masked_by_pattern_too():
    text = "connect failed: host=db password='s3 cret' user=u; retry with postgresql://u:hunter22@db/x"
    clean = scrub.scrub(text)
    assert "s3 cret" not in clean and "hunter22" not in clean
    assert "password=***" in clean and "postgresql://u:***@db/x" in clean
    assert scrub.dsn_secrets('host=db password="pass word" dbname=x')[1:] == ["pass word"]


def test_registered_secrets_are_masked_percent_decoded_as_well():
    scrub.register(*scrub.dsn_secrets("postgresql://u:sp%40ce-secret@db/x"))
    assert scrub.scrub("auth failed for sp@ce-secret and sp%40ce-secret") == "auth failed for *** and ***"


def test_every_log_record_is_scrubbed_whatever_handler_emits_it():
    scrub.register("t0p-secret-pw")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    before = logging.getLogRecordFactory()
    scrub.install()
    scrub.install()  # once only
    logger = logging.getLogger("test.scrub")
    logger.addHandler(handler)  # added after install, like a Beam worker's handler
    try:
        assert logging.getLogRecordFactory() is not before or isinstance(before, scrub._ScrubbingFactory)
        logger.warning("connecting with %s", "t0p-secret-pw")
        try:
            raise RuntimeError("libpq said t0p-secret-pw")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(before)
    assert records and all("t0p-secret-pw" not in r for r in records)
    assert "connecting with ***" in records[0] and "RuntimeError: libpq said ***" in records[1]
