"""Command-line helpers shared by launch and evaluate: config-file flags whose mistakes are messages.

A `--config` file that does not exist, or an override of a field the config does not have
(`--config.train.max_iteratons=3`), ends the program with one `error:` line (keeping ml_collections'
"did you mean" hint) and exit status 2, before anything is created on disk. ml_collections applies the
overrides when it parses the config flag: for the default config while the flag is defined
(`define_config_file`), for an explicit `--config=FILE` while absl parses the command line (`run_app`'s
flags parser); both catch the error and print `config_error`.
"""

from __future__ import annotations

import os
import re
import sys


def configs_dir() -> str:
    """The shipped config files: `repirl_jax/configs/` of an installed package (pyproject maps the checkout's
    configs/ there), else configs/ of the source checkout holding this package (also an editable install)."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "configs")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(here), "configs")


def shipped_config(name: str) -> str:
    """Path of a shipped config file by file name, e.g. "demo.py" (the CLIs' defaults)."""
    return os.path.join(configs_dir(), name)


def _config_path(argv: list[str], name: str) -> str | None:
    """The value of --NAME=PATH (or --NAME PATH) in argv; a trailing ':ARGS' of config_flags is dropped."""
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        return value.split(":", 1)[0] if not os.path.exists(value) else value
    return None


def run_app(main, module_name: str, config_flag: str | None = None) -> None:
    """absl.app.run of main(argv) -> exit status, for `python -m repirl_jax.X` (module_name "__main__") and
    for the installed command (repirl-train, ...) alike: under the command, whose __main__ is pip's wrapper
    script, --help shows the module's docstring and its flags as it does under python -m. `config_flag`: the
    name of a `define_config_file` flag whose bad overrides are one-line messages (exit status 2)."""
    from absl import app, flags
    if module_name != "__main__":
        wrapper = sys.modules["__main__"]
        wrapper.__doc__ = wrapper.__doc__ or sys.modules[module_name].__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def parse(argv: list[str]) -> list[str]:
        try:
            return app.parse_flags_with_usage(argv)
        except (KeyError, AttributeError) as e:  # an override of a field the --config file's config lacks
            if config_flag is None or not any(a.lstrip("-").startswith(f"{config_flag}.") for a in argv[1:]):
                raise
            print(config_error(argv, config_flag, e), file=sys.stderr)
            sys.exit(2)

    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse)


def config_error(argv: list[str], name: str, error: BaseException) -> str:
    """A one-line message for an override of a field the config does not have."""
    text = str(error)
    key = re.search(r"'([A-Za-z0-9_]+)", text)
    key = key.group(1) if key else text
    hint = re.search(r'(Did you mean "[^"]+" instead of "[^"]+"\?)', text)
    named = [a.split("=", 1)[0] for a in argv if a.startswith(f"--{name}.") and
             key in a.split("=", 1)[0].split(".")[1:]]
    where = f"{named[0]}: " if named else ""
    return f"error: {where}the config has no field {key!r}" + (f". {hint.group(1)}" if hint else "")


def define_config_file(name: str, default: str, help_string: str, argv: list[str] | None = None) -> None:
    """config_flags.DEFINE_config_file, exiting with a message for a missing file or a bad override."""
    from ml_collections import config_flags
    argv = sys.argv if argv is None else argv
    path = _config_path(argv, name)
    if path is not None and not os.path.isfile(path):
        print(f"error: --{name}={path}: no such config file (give a path like configs/demo.py; the shipped "
              f"configs are in {configs_dir()})", file=sys.stderr)
        sys.exit(2)
    try:
        config_flags.DEFINE_config_file(name, default, help_string)
    except (KeyError, AttributeError) as e:
        print(config_error(argv, name, e), file=sys.stderr)
        sys.exit(2)
