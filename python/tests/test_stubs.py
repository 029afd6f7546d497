"""The type stubs (quiver/_quiver.pyi) against the extension module they
describe: the Rust bindings are the truth, and the stubs must say the same.

Both ways, for the module and for each class: every public name of one is
in the other, as the same sort of thing (class, function, constant; method,
static method, property or attribute); a class's bases are the same; the
protocol methods type checkers use (`__len__`, `__enter__`, `__lt__`, ...)
are declared where the class has them; and wherever PyO3 gives a
`__text_signature__` (functions, methods, constructors), the parameters
agree in name, order, keyword-only-ness and whether they have a default.
Read-only properties, and the buffer protocol, are checked on an instance
of every class."""

import ast
import inspect
import pathlib

import pyarrow as pa
import pytest

import quiver
import quiver._quiver as native

STUBS = pathlib.Path(__file__).resolve().parents[1] / "quiver" / "_quiver.pyi"

# Protocol methods a type checker needs declared to accept `len(x)`, `with
# x:`, `for ... in x`, `bytes(x)`, `x < y`, ... (the ones every object has,
# `__eq__`, `__hash__`, `__repr__`, are not asked for).
PROTOCOL = {
    "__len__", "__iter__", "__next__", "__enter__", "__exit__", "__bytes__",
    "__getitem__", "__setitem__", "__delitem__", "__contains__", "__call__",
    "__lt__", "__le__", "__gt__", "__ge__", "__int__", "__index__", "__float__",
    "__bool__", "__reversed__", "__aiter__", "__anext__", "__aenter__", "__aexit__",
}  # fmt: skip

DATA = {"property", "attribute"}


# ---- the stubs, parsed ----


class StubClass:
    def __init__(self, node):
        self.name = node.name
        self.bases = [_name(b) for b in node.bases]
        self.members = {}  # name -> kind: method, staticmethod, classmethod, property, attribute
        self.defs = {}  # name -> [FunctionDef] (several for an @overload)
        self.setters = set()  # properties with a @name.setter
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                decorators = [_name(d) for d in item.decorator_list]
                if f"{item.name}.setter" in decorators or f"{item.name}.deleter" in decorators:
                    self.setters.add(item.name)
                    continue
                kinds = [k for k in ("property", "staticmethod", "classmethod") if k in decorators]
                kind = kinds[0] if kinds else "method"
                self.members[item.name] = kind
                self.defs.setdefault(item.name, []).append(item)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                self.members[item.target.id] = "attribute"
            elif isinstance(item, ast.Assign):
                for target in item.targets:
                    if isinstance(target, ast.Name):
                        self.members[target.id] = "attribute"


def _name(node):
    """`a.b.c` of a Name/Attribute (a decorator or a base), the call's if called."""
    if isinstance(node, ast.Call):
        return _name(node.func)
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ast.unparse(node)


def _parse_stubs():
    tree = ast.parse(STUBS.read_text(), filename=str(STUBS))
    classes, functions, constants, aliases = {}, {}, set(), set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = StubClass(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            # `X: TypeAlias = ...` is an alias, `X: int` a constant.
            if _name(node.annotation).endswith("TypeAlias"):
                aliases.add(node.target.id)
            else:
                constants.add(node.target.id)
        elif isinstance(node, ast.Assign):
            aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return classes, functions, constants, aliases


STUB_CLASSES, STUB_FUNCTIONS, STUB_CONSTANTS, STUB_ALIASES = _parse_stubs()


def stub_members(cls):
    """The members of stub class `cls`, with those of its stub bases."""
    members = {}
    for base in cls.bases:
        if base in STUB_CLASSES:
            members.update(stub_members(STUB_CLASSES[base]))
    members.update(cls.members)
    return members


def stub_params(node, bound):
    """`[(name, kind, has_default)]` of a stub def (`self`/`cls` dropped if `bound`)."""
    a = node.args
    positional = a.posonlyargs + a.args
    defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
    params = [(p.arg, "positional", d) for p, d in zip(positional, defaults)]
    if bound:
        params = params[1:]
    if a.vararg:
        params.append((a.vararg.arg, "*args", False))
    params += [(p.arg, "keyword", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        params.append((a.kwarg.arg, "**kwargs", False))
    return params


# ---- the module, inspected ----

RUNTIME_CLASSES = {n: v for n, v in vars(native).items() if not n.startswith("_") and isinstance(v, type)}
RUNTIME_FUNCTIONS = {
    n: v for n, v in vars(native).items() if not n.startswith("_") and (inspect.isbuiltin(v) or inspect.isfunction(v))
}
RUNTIME_CONSTANTS = {
    n for n in vars(native) if not n.startswith("_") and n not in RUNTIME_CLASSES and n not in RUNTIME_FUNCTIONS
}


def is_exception(cls):
    return issubclass(cls, BaseException)


def _own_bases(cls):
    """`cls` and the classes of its MRO that are not Python's own."""
    return [k for k in cls.__mro__ if k.__module__ != "builtins"]


def runtime_kind(cls, name):
    """What `name` of `cls` is: method, staticmethod, classmethod or property."""
    for klass in _own_bases(cls):
        if name in vars(klass):
            attr = vars(klass)[name]
            break
    else:
        return None
    if isinstance(attr, staticmethod):
        return "staticmethod"
    if isinstance(attr, classmethod) or type(attr).__name__ == "classmethod_descriptor":
        return "classmethod"
    if inspect.isdatadescriptor(attr):
        return "property"
    if callable(attr):
        return "method"
    return "attribute"


def runtime_members(cls):
    """The public names `cls` defines (not those of Python's own bases)."""
    return {n: runtime_kind(cls, n) for k in _own_bases(cls) for n in vars(k) if not n.startswith("_")}


def runtime_params(obj, bound):
    """`[(name, kind, has_default)]` from `obj`'s `__text_signature__`, or
    None if PyO3 gave it none."""
    if getattr(obj, "__text_signature__", None) is None:
        return None
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.VAR_POSITIONAL: "*args",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
        inspect.Parameter.VAR_KEYWORD: "**kwargs",
    }
    params = [
        (p.name, kinds[p.kind], p.default is not inspect.Parameter.empty)
        for p in inspect.signature(obj).parameters.values()
    ]
    return params[1:] if bound else params


def check_signature(where, obj, defs, bound, stub_bound=None):
    """The stub `defs` of `obj` (several if overloaded) against its text
    signature; `bound`: drop the first parameter (`self`, `cls`), of the
    stub's alone if `stub_bound` says so (a constructor's)."""
    expected = runtime_params(obj, bound)
    if expected is None:
        return []
    problems = []
    for node in defs:
        got = stub_params(node, bound if stub_bound is None else stub_bound)
        if len(defs) > 1:  # an overload narrows types (and may drop defaults), not names
            got, want = [p[:2] for p in got], [p[:2] for p in expected]
        else:
            want = expected
        if got != want:
            problems.append(f"{where}: the stub has {_show(got)}, the module {_show(want)}")
    return problems


def _show(params):
    """`[(name, kind, has_default)]` as a signature: `(a, b=..., *, c)`."""
    shown, star = [], False
    for name, kind, *default in params:
        if kind == "keyword" and not star:
            shown.append("*")
        star = star or kind in ("keyword", "*args")
        prefix = {"*args": "*", "**kwargs": "**"}.get(kind, "")
        shown.append(prefix + name + ("=..." if default == [True] else ""))
    return "(" + ", ".join(shown) + ")"


# ---- the module's names ----


def test_the_stubs_declare_every_name_of_the_module_and_nothing_else():
    stubbed = set(STUB_CLASSES) | set(STUB_FUNCTIONS) | STUB_CONSTANTS
    public = set(RUNTIME_CLASSES) | set(RUNTIME_FUNCTIONS) | RUNTIME_CONSTANTS
    assert sorted(public - stubbed) == [], "in the module but not in _quiver.pyi"
    assert sorted(stubbed - public) == [], "in _quiver.pyi but not in the module"
    # Aliases are for the stubs alone: private, so nobody imports them.
    assert sorted(a for a in STUB_ALIASES if not a.startswith("_") and a not in public) == []
    for name in public:
        want = "class" if name in RUNTIME_CLASSES else "function" if name in RUNTIME_FUNCTIONS else "constant"
        got = "class" if name in STUB_CLASSES else "function" if name in STUB_FUNCTIONS else "constant"
        assert got == want, f"{name} is a {want}, but the stubs make it a {got}"


def test_the_package_re_exports_every_name():
    assert sorted(set(RUNTIME_CLASSES) | set(RUNTIME_FUNCTIONS) | RUNTIME_CONSTANTS) == sorted(
        n for n in quiver.__all__ if n != "plasma"
    )


@pytest.mark.parametrize("name", sorted(RUNTIME_FUNCTIONS))
def test_function_signatures(name):
    assert check_signature(name, RUNTIME_FUNCTIONS[name], STUB_FUNCTIONS[name], bound=False) == []


# ---- each class ----


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_class_bases(name):
    cls, stub = RUNTIME_CLASSES[name], STUB_CLASSES[name]
    assert [b for b in stub.bases if b != "object"] == [b.__name__ for b in cls.__bases__ if b is not object]


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_class_members(name):
    cls, stub = RUNTIME_CLASSES[name], STUB_CLASSES[name]
    runtime = runtime_members(cls)
    stubbed = {n: k for n, k in stub_members(stub).items() if not n.startswith("_")}
    assert sorted(set(runtime) - set(stubbed)) == [], f"{name}: in the class but not in the stub"
    assert sorted(set(stubbed) - set(runtime)) == [], f"{name}: in the stub but not in the class"
    # Properties and attributes are both data; writability is checked on instances.
    wrong = {
        n: (stubbed[n], runtime[n])
        for n in runtime
        if stubbed[n] != runtime[n] and not (stubbed[n] in DATA and runtime[n] in DATA)
    }
    assert wrong == {}, f"{name}: (stub, module) disagree on what these are"


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_protocol_methods(name):
    cls, stub = RUNTIME_CLASSES[name], STUB_CLASSES[name]
    runtime = {n for k in _own_bases(cls) for n in vars(k) if n in PROTOCOL}
    declared = {n for n in stub_members(stub) if n.startswith("__")}
    assert sorted(runtime - declared) == [], f"{name}: protocol methods missing from the stub"
    # Whatever dunder the stub declares, the class has (the buffer protocol
    # and the constructor are checked on their own).
    absent = [n for n in declared - {"__buffer__", "__init__", "__new__"} if not hasattr(cls, n)]
    assert absent == [], f"{name}: the stub declares what the class lacks"


@pytest.mark.parametrize("name", sorted(RUNTIME_CLASSES))
def test_method_signatures(name):
    cls, stub = RUNTIME_CLASSES[name], STUB_CLASSES[name]
    problems = []
    for member, kind in runtime_members(cls).items():
        if kind in ("method", "staticmethod", "classmethod") and member in stub.defs:
            bound = kind != "staticmethod"
            obj = getattr(cls, member)
            problems += check_signature(f"{name}.{member}", obj, stub.defs[member], bound)
    assert problems == []


@pytest.mark.parametrize("name", sorted(n for n, c in RUNTIME_CLASSES.items() if not is_exception(c)))
def test_constructors(name):
    """A class PyO3 gave a `#[new]` has `__new__` of its own (and its text
    signature); the stub declares `__init__` (or `__new__`) exactly then."""
    cls, stub = RUNTIME_CLASSES[name], STUB_CLASSES[name]
    constructors = [n for n in ("__init__", "__new__") if n in stub.defs]
    if "__new__" not in vars(cls):
        assert constructors == [], f"{name} cannot be constructed from Python, but the stub says it can"
        with pytest.raises(TypeError):
            cls()
        return
    assert constructors, f"{name} has a constructor the stub lacks"
    for constructor in constructors:
        assert check_signature(f"{name}.{constructor}", cls, stub.defs[constructor], bound=False, stub_bound=True) == []


# ---- instances: what only they show ----


@pytest.fixture
def instances(store, tmp_path):
    """One instance of every class the module exposes (exceptions aside)."""
    schema = pa.schema([("x", pa.float64()), ("y", pa.float64())])
    batch = pa.record_batch([pa.array([1.0, 2.0]), pa.array([2.0, 4.0])], schema=schema)
    stream = quiver.Stream.create(store, "s", schema, groups=["g", "shards"])
    producer = stream.producer()
    producer.append(batch)
    consumer = stream.consumer("g")
    meta = consumer.poll(timeout=5.0, with_meta=True)
    shards = quiver.ShardManager.join(stream, "shards", shard_size=1)
    task = shards.next_task(timeout=5.0)
    store.put(quiver.ObjectId.sequential(1, 0, 0), b"data")
    view = store.get(quiver.ObjectId.sequential(1, 0, 0))
    builder = store.create_object(quiver.ObjectId.sequential(1, 0, 1), 8)
    model = quiver.SharedModel.create(store, "m", ["x"], "y")
    reservation = producer.reserve(2)
    made = [
        quiver.ObjectId.random(), builder, view, store, stream, producer, consumer, meta, shards, task,
        quiver.SgdRegressor(), model, model.trainer(), store.create_cells(quiver.ObjectId.random(), 2),
        consumer.iter_numpy(), reservation,
    ]  # fmt: skip
    yield {type(obj).__name__: obj for obj in made}
    reservation.abort()
    builder.abort()
    view.release()
    shards.leave()


def test_instances_of_every_class(instances):
    assert sorted(instances) == sorted(n for n, c in RUNTIME_CLASSES.items() if not is_exception(c))


def test_read_only_properties(instances):
    """What the module will not let be set is a `@property` without a
    setter in the stub; what it lets be set, an attribute or a property
    with a setter."""
    wrong = []
    for name, obj in instances.items():
        stub = STUB_CLASSES[name]
        for member, kind in runtime_members(type(obj)).items():
            if kind not in DATA:
                continue
            try:
                setattr(obj, member, getattr(obj, member))
                writable = True
            except AttributeError:
                writable = False
            stub_writable = stub.members.get(member) == "attribute" or member in stub.setters
            if writable != stub_writable:
                wrong.append(f"{name}.{member} is {'' if writable else 'not '}writable")
    assert wrong == [], "the stubs say otherwise"


def test_the_buffer_protocol(instances):
    """`__buffer__` in the stub exactly for the classes `memoryview` takes."""
    for name, obj in instances.items():
        try:
            memoryview(obj).release()
            has_buffer = True
        except TypeError:
            has_buffer = False
        assert has_buffer == ("__buffer__" in STUB_CLASSES[name].members), name
