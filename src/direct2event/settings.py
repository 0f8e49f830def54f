"""Project settings: hooks and the configuration loader."""

from __future__ import annotations

import warnings

from kedro.config import OmegaConfigLoader

from direct2event.glue.catalog import CONFIG_LOADER_ARGS
from direct2event.glue.hooks import CredentialMask, ProjectHooks
from direct2event.glue.sessions import UniqueSessionStore

# kedro and kedro-mlflow call OmegaConf.register_new_resolver, which omegaconf 2.4 deprecates:
# their call, not this project's, and nothing a user can act on; kept off every run's output.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

HOOKS = (CredentialMask(), ProjectHooks())
# runs started in the same millisecond would share a session id and a dataset version
SESSION_STORE_CLASS = UniqueSessionStore

CONFIG_LOADER_CLASS = OmegaConfigLoader
__all__ = ["CONFIG_LOADER_ARGS", "CONFIG_LOADER_CLASS", "HOOKS", "SESSION_STORE_CLASS"]
