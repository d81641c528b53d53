"""The service's tables, all in its own schema ``gateway``."""

from ksef_gateway.settings import SCHEMA
from platform_common.db import make_metadata
from platform_common.messaging.tables import add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)
