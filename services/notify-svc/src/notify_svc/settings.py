from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from platform_common.sealing import SealingError, public_key_of, read_private_key_file
from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "notify-svc"
SCHEMA = "notify"


class NotifySettings(ServiceSettings):
    """Every variable is ``NOTIFY_<FIELD>``, nested with ``__``:
    ``NOTIFY_DB__URL``, ``NOTIFY_KAFKA__BOOTSTRAP_SERVERS``."""

    # A refused value is not echoed into the error (and so the logs): it may be the private key.
    model_config = SettingsConfigDict(**service_config("NOTIFY_"), hide_input_in_errors=True)

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/notify.db"))
    # The private half of the key auth-svc seals invitation and password-reset links to (its public half is
    # AUTH_NOTIFY_PUBLIC_KEY; `notify-svc seal-keygen` makes a pair). Either the key itself or a file holding
    # it that only its owner can read.
    seal_private_key: SecretStr | None = None
    seal_key_file: Path | None = None

    @model_validator(mode="after")
    def _check_seal_key(self) -> "NotifySettings":
        if self.seal_private_key is not None and self.seal_key_file is not None:
            raise ValueError("set NOTIFY_SEAL_PRIVATE_KEY or NOTIFY_SEAL_KEY_FILE, not both")
        # A configured key is checked now, not at the first invitation (and `migrate`, which needs no key, is not
        # refused for lacking one: the service refuses to start without it in production, see mail.consumers).
        self.seal_key()
        return self

    def seal_key(self) -> SecretStr | None:
        """The private key that opens sealed links, or None when none is configured (outside production)."""
        try:
            if self.seal_key_file is not None:
                return SecretStr(read_private_key_file(self.seal_key_file))
            if self.seal_private_key is not None:
                public_key_of(self.seal_private_key.get_secret_value())
        except SealingError as exc:
            raise ValueError(f"unusable sealing key: {exc}") from None
        return self.seal_private_key
