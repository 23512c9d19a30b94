"""Sphinx configuration of the xent_fast documentation.

Builds offline: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors)
and ``sphinx-build -W -b doctest docs docs/_build/doctest`` (the pages' examples and the
docstrings' examples run). The package is imported, so build the extensions first
(``pip install .`` or ``python setup.py build_ext --inplace``).
"""

import os
import sys

# The source tree's package when it is built in place (python setup.py build_ext
# --inplace), else the installed one (the nox session builds from outside the tree).
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.exists(os.path.join(_root, "xent_fast", "__init__.py")) and any(
    f.startswith("_runtime.") and not f.endswith((".pyi", ".pyx"))
    for f in os.listdir(os.path.join(_root, "xent_fast"))
):
    sys.path.insert(0, _root)

import xent_fast  # noqa: E402

project = "xent_fast"
author = "xent_fast developers"
copyright = "xent_fast developers"
version = release = xent_fast.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# The user guide keeps the README's Markdown: MyST reads it, and its examples are
# `{testcode}` blocks that the doctest builder runs, one namespace per page.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
# bench/results/*.md are included as they are written, and some go from # to ###
suppress_warnings = ["myst.header"]

autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc Parameters sections say it better
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Every example runs as the user would type it: `np` and `xf` are imported in each.
# Examples that need PyTorch, JAX or dask are skipped (`:skipif:`) where it is missing.
doctest_global_setup = """
import importlib.util
import numpy as np
import xent_fast as xf
no_torch = importlib.util.find_spec("torch") is None
no_jax = importlib.util.find_spec("jax") is None
no_dask = importlib.util.find_spec("dask") is None
"""
doctest_test_doctest_blocks = "default"

html_theme = "pydata_sphinx_theme"
html_title = f"xent_fast {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "use_edit_page_button": False,
    # the user guide's pages are short: their width goes to the examples instead
    "secondary_sidebar_items": {
        "guide/*": [],
        **{
            p: ["page-toc"]
            for p in (
                "index",
                "install",
                "api",
                "generated/*",
                "performance/*",
                "design",
                "development",
            )
        },
    },
}
html_static_path = ["_static"]
html_css_files = ["xent_fast.css"]
html_show_sourcelink = False
html_last_updated_fmt = None
