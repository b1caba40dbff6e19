"""The project's hydra configs. pyproject.toml installs this folder as the package `harness.configs` (inside
the wheel, or mapped onto the repository by an editable install); `harness.hydra_app.config_dir()` finds it."""
