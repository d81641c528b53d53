"""The service's tables, all in its own schema ``buffer``."""

from buffer_svc.settings import SCHEMA
from platform_common.client_access import add_client_access_table
from platform_common.db import make_metadata
from platform_common.messaging.tables import add_messaging_tables

metadata = make_metadata(SCHEMA)
messaging_tables = add_messaging_tables(metadata)
# Which office may read which client now (platform_common.client_access, buffer_0002).
client_access = add_client_access_table(metadata)
