"""Argument parsing shared by every service, and YAML config files."""

from shared.config.args import CommonConfig, NatsOptions, add_common_args, common_from_args
from shared.config.yaml_config import ConfigError, expand_config_argv

__all__ = ["CommonConfig", "ConfigError", "NatsOptions", "add_common_args", "common_from_args", "expand_config_argv"]
