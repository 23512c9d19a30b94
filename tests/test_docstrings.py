"""Every public function and class has a numpydoc docstring with an example, and every
example in the package's docstrings runs and prints what it says.

Generic on purpose: the public API is whatever ``xent_fast.__all__`` and the ``__all__``
of its public submodules (``xent_fast.info`` and any added later) name, and the examples
are those of every Python module of the package. A submodule whose optional dependency
(PyTorch, JAX, dask...) is not installed is skipped, by name.
"""

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import xent_fast


def _import(name):
    """The module, or a skip reason when an optional dependency of it is missing."""
    try:
        return importlib.import_module(name), None
    except ImportError as exc:
        # the adapters raise their own ImportError (with an install hint) from the
        # ModuleNotFoundError of the framework they need
        missing = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
        if (isinstance(missing, ModuleNotFoundError) and missing.name
                and not missing.name.startswith("xent_fast")):
            return None, f"{name} needs {missing.name}, which is not installed"
        raise


def _python_modules():
    """Names of every pure-Python module of the package (compiled ones hold no examples)."""
    names = ["xent_fast"]
    for info in pkgutil.walk_packages(xent_fast.__path__, "xent_fast."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            names.append(info.name)
    return sorted(names)


MODULES = _python_modules()
PUBLIC_MODULES = [m for m in MODULES
                  if not any(part.startswith("_") for part in m.split(".")[1:])]


def _public_objects():
    """(qualified name, object) for every function and class in a public ``__all__``."""
    out = []
    for modname in PUBLIC_MODULES:
        mod, skip = _import(modname)
        if mod is None:
            out.append(pytest.param(modname, None, marks=pytest.mark.skip(reason=skip)))
            continue
        assert hasattr(mod, "__all__"), f"public module {modname} has no __all__"
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                out.append(pytest.param(f"{modname}.{name}", obj, id=f"{modname}.{name}"))
    return out


PUBLIC = _public_objects()
SECTION = re.compile(r"^(\w[\w ]*)\n-{3,}\s*$", re.M)


def _sections(doc):
    """{section title: body} of a numpydoc docstring."""
    parts = SECTION.split(doc)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _documented_parameters(obj, seen=()):
    """Parameter names documented in ``obj``'s Parameters section, and those of any
    function its docstring refers to with :func:`name` ("other parameters are those
    of :func:`cross_entropy`")."""
    doc = inspect.getdoc(obj) or ""
    body = _sections(doc).get("Parameters", "")
    names = set()
    for line in body.splitlines():
        m = re.match(r"^(\*{0,2}[A-Za-z_][\w, *]*?)\s*:", line)
        if m and not line.startswith(" "):
            names.update(n.strip().lstrip("*") for n in m.group(1).split(","))
    module = inspect.getmodule(obj)
    for ref in re.findall(r":func:`~?([\w.]+)`", doc):
        target = getattr(module, ref.split(".")[-1], None) or getattr(xent_fast, ref, None)
        if callable(target) and target is not obj and target not in seen:
            names |= _documented_parameters(target, seen + (obj,))
    return names


@pytest.mark.parametrize("name, obj", PUBLIC)
def test_public_api_has_a_numpydoc_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{name}: the docstring starts with a summary line"
    sections = _sections(doc)
    assert "Examples" in sections and ">>>" in sections["Examples"], \
        f"{name} has no Examples section with a >>> example"
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if not attr.startswith("_") and (inspect.isfunction(member)
                                             or isinstance(member, property)):
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"
        return
    try:
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except (TypeError, ValueError):   # a builtin without a signature
        return
    if params:
        assert "Parameters" in sections, f"{name} has no Parameters section"
        missing = [p.name for p in params if p.name not in _documented_parameters(obj)]
        assert not missing, f"{name} does not document {missing}"
    returns = inspect.signature(obj).return_annotation
    if returns not in (None, "None"):
        assert "Returns" in sections or "Yields" in sections, f"{name} has no Returns section"


@pytest.mark.parametrize("modname", MODULES)
def test_docstring_examples_run(modname):
    mod, skip = _import(modname)
    if mod is None:
        pytest.skip(skip)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False,
                             report=True)
    assert result.failed == 0, f"{result.failed} failing examples in {modname}"


def test_examples_exist_and_the_checks_see_the_whole_api():
    # The lists above are not empty by accident: the known public functions are in them.
    names = {p.values[0] for p in PUBLIC}
    for expected in ("xent_fast.softmax", "xent_fast.cross_entropy_and_grad",
                     "xent_fast.sigmoid_focal_loss", "xent_fast.info.kl_divergence"):
        assert expected in names
    finder = doctest.DocTestFinder()
    n_examples = sum(len(t.examples) for m in MODULES if _import(m)[0] is not None
                     for t in finder.find(_import(m)[0]))
    assert n_examples >= 40, n_examples


def test_the_parameter_check_catches_an_undocumented_parameter():
    def documented(a, *, b=1):
        """Summary.

        Parameters
        ----------
        a : int
            A.

        Returns
        -------
        int

        Examples
        --------
        >>> documented(1)
        1
        """
        return a

    assert _documented_parameters(documented) == {"a"}
    with pytest.raises(AssertionError, match=r"does not document \['b'\]"):
        test_public_api_has_a_numpydoc_docstring_with_an_example("documented", documented)
