"""Every setting of a mount, declared once.

Each `Setting` says its name, type, default, help and where it may be given.
From `SETTINGS` come the command-line options (`icefs.cli.options`), the checks of
``--config`` files (`from_config`), the ``-o name=value`` options that
``icefs mount -o``, mount(8) and fstab take (`from_options`), and the command
line of the background daemon (`to_argv`).  Precedence: the command line
(options and ``-o``), then the config file, then the defaults here.

Secrets are never ``-o`` options (they would show in ``ps`` and in mtab) and
never reach the daemon's command line; `icefs.cli.storage` hands them over in
its environment.  Pure: nothing here imports more than the standard library,
so ``icefs --help`` stays fast.
"""

from icefs.settings._setting import Setting, SettingError, WriteBehind, parse_size
from icefs.settings._sources import (
    defaults,
    from_config,
    from_options,
    pick,
    setting_field,
    to_argv,
)
from icefs.settings._table import SECRET_NAMES, SETTINGS

__all__ = [
    "SECRET_NAMES",
    "SETTINGS",
    "Setting",
    "SettingError",
    "WriteBehind",
    "defaults",
    "from_config",
    "from_options",
    "parse_size",
    "pick",
    "setting_field",
    "to_argv",
]
