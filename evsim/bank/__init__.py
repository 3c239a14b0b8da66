"""The MemoryBank: the site's one SQLite store of events, anomalies, sessions, metrics, patterns."""
from evsim.bank.bank import *  # noqa: F403
from evsim.bank.bank import (  # noqa: F401
                             RECORDER,
                             SEVERITIES,
                             TABLES,
                             MemoryBank,
                             MemoryBankError,
                             default_db_path,
                             format_timestamp,
                             parse_timestamp,
                             utc_now,
)
