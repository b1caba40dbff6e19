"""The package list for setuptools (the rest of the metadata is pyproject.toml's).

configs/ stays at the top of the repository, where the hydra apps' users look for it, and is installed as
the package `harness.configs`: copied into the wheel, mapped onto the folder by an editable install.
`harness.hydra_app.config_dir()` finds it either way.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["harness", "harness.*", "agents", "agents.*"]), "harness.configs"],
    package_dir={"harness.configs": "configs"},
)
