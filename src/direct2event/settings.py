"""Project settings: hooks and the configuration loader."""

from __future__ import annotations

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from direct2event.glue.hooks import CredentialMask, ProjectHooks
from direct2event.glue.sessions import UniqueSessionStore

HOOKS = (CredentialMask(), ProjectHooks())
# runs started in the same millisecond would share a session id and a dataset version
SESSION_STORE_CLASS = UniqueSessionStore

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    # mlflow.yml reads MLFLOW_TRACKING_URI (a tracking server for sweep workers); Kedro enables
    # oc.env only for credentials unless it is registered here
    "custom_resolvers": {"oc.env": oc.env},
}
