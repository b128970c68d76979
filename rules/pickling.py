"""MC1xx: callables and objects stored on a module that ``pickle`` cannot save.

``torch.save(model)`` pickles the whole module tree. Pickle saves a function by its qualified
name, so a lambda (``<lambda>``), a function or class defined inside another function
(``f.<locals>.g``), an open file or a lock stored anywhere on the tree makes it fail with
"Can't pickle ... <lambda>". The seed's ResNeXt-101, auto-converted from Lua Torch, stores
``Lambda(lambda x: x)``, ``LambdaMap(...)`` and ``LambdaReduce(lambda x, y: x + y)`` modules.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass

from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.rules.family import Family
from modelcheck.static.source import SourceFile, Visitor, cst, dotted_name, names_read, never_module, walk
from modelcheck.targets import Target

#: A file can only hold a finding if it has a lambda, or a def/class nested in a function
#: (``NESTED_DEFS``: the static pre-screen finds those from the block structure, not by regex).
TRIGGER = re.compile(r"lambda(?<!\wlambda)(?!\w)")  # \blambda\b, written to start with a literal: 50x faster
NESTED_DEFS = True

#: methods that keep a callable on the module they are called on: module hooks (not
#: ``Tensor.register_hook``, nor the global ``register_module_*_hook``) and setattr
STORING_METHODS = re.compile(r"^_?register_(?!module_)\w+_hook$|^setattr$|^__setattr__$|^add_module$")
CONTAINERS = frozenset({"torch.nn.Sequential", "torch.nn.ModuleList", "torch.nn.ModuleDict"})
#: calls whose result holds what they were given: storing the result stores the argument
WRAPPERS = frozenset({"functools.partial", "collections.defaultdict"})
#: libraries whose classes are not modules: a lambda given to them is not stored on the model
NOT_MODULES = ("torch.optim.", "torch.utils.data.", "torchvision.transforms.")
BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class StoredObjectFacts:
    """Something unpicklable that ends up on a module.

    ``kind``: "lambda", "local_function" (defined inside a function, a closure included),
    "local_class" (a class defined inside a function, or an instance of one) or "unpicklable"
    (a live resource such as a file, lock or generator; seen by the dynamic pass only).
    """

    kind: str
    how: str  # how it gets stored, e.g. "passed to Lambda(...)" or "assigned to self.act"
    certain: bool = True  # False when the receiving object may not be a module
    name: str | None = None
    captures_locals: bool = False
    lift_blocker: str = ""  # why a lambda cannot be moved to module level as written (see lift_blocker)
    type_name: str | None = None


def _storage_message(facts: StoredObjectFacts, what: str) -> str:
    fails = "fails" if facts.certain else "may fail"
    return f"{what} {facts.how}: torch.save(model) {fails} (\"Can't pickle ...\")"


class _StoredRule(Rule):
    kinds: frozenset[str] = frozenset()

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR

    def describe_what(self, facts: StoredObjectFacts) -> str:
        raise NotImplementedError

    def match(self, facts: StoredObjectFacts) -> Match | None:
        if facts.kind not in self.kinds:
            return None
        message = _storage_message(facts, self.describe_what(facts))
        return Match(message, certain=facts.certain, fixable=self.fixable(facts))

    def fixable(self, facts: StoredObjectFacts) -> bool:
        return False


class LambdaOnModule(_StoredRule):
    """## What it does
    Checks for lambdas stored on an `nn.Module`'s module tree: as an attribute
    (`self.act = lambda x: x`), kept by a module it is passed to (`Lambda(lambda x: x)` in
    Lua-converted code), inside a container module, or registered as a hook.

    ## Why is this bad?
    pickle saves a function by its qualified name, and a lambda has none it can be looked up by
    (`<lambda>`). `torch.save(model)`, `copy.deepcopy(model)` and multiprocessing therefore fail
    ("Can't pickle <function <lambda>>") on any lambda stored on the module tree, however deep.

    ## Fix safety
    `--fix` replaces the lambda with a module-level function of the same parameters and body,
    named by what it does (`_identity`, `_flatten`), or with the `operator` function it spells
    (`lambda x, y: x + y` becomes `operator.add`); a lambda that reads local variables becomes
    `functools.partial(_f, var=var)` when none of them is rebound after it. Safe, and exact by
    construction: the module tree and `state_dict` stay identical, so it applies without a model
    (`--static-only`, the pre-commit hook); where a model is built from the file, its outputs are
    still compared bit for bit. Left alone, with the reason: a lambda reading a variable rebound
    later, a parameter default that is not a literal, `super()`, `yield` or `await` in the body.
    """

    code = "MC101"
    name = "lambda-on-module"
    summary = "a lambda stored on an nn.Module: torch.save(model) cannot pickle it"
    bad_example = (
        "import torch.nn as nn\n\n"
        "class Lambda(nn.Module):\n"
        "    def __init__(self, fn):\n        super().__init__()\n        self.fn = fn\n\n"
        "    def forward(self, x):\n        return self.fn(x)\n\n"
        "identity = Lambda(lambda x: x)\n"
    )
    good_example = (
        "import torch.nn as nn\n\n"
        "class Lambda(nn.Module):\n"
        "    def __init__(self, fn):\n        super().__init__()\n        self.fn = fn\n\n"
        "    def forward(self, x):\n        return self.fn(x)\n\n"
        "def _identity(x):\n    return x\n\n"
        "identity = Lambda(_identity)\n"
    )
    kinds = frozenset({"lambda"})

    def describe_what(self, facts: StoredObjectFacts) -> str:
        return "lambda"

    def fixable(self, facts: StoredObjectFacts) -> bool:
        return not facts.captures_locals and not facts.lift_blocker


class LocalFunctionOnModule(_StoredRule):
    """## What it does
    Checks for functions defined inside another function (closures) that are stored on an
    `nn.Module`'s module tree.

    ## Why is this bad?
    A nested function's qualified name is like `make.<locals>.act`, which pickle cannot look up,
    so `torch.save(model)` fails once such a function is stored on the module tree.

    ## Fix safety
    There is no automatic fix: what the closure reads has to be passed some other way. Define
    the function at module level and pass what it closed over with `functools.partial` (as in
    the example) or as module attributes.
    """

    code = "MC102"
    name = "local-function-on-module"
    summary = "a function defined inside a function (a closure) stored on an nn.Module"
    bad_example = (
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, scale):\n        super().__init__()\n\n"
        "        def act(x):\n            return x * scale\n\n"
        "        self.act = act\n"
    )
    good_example = (
        "import functools\nimport torch.nn as nn\n\n"
        "def _scaled(x, scale):\n    return x * scale\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, scale):\n        super().__init__()\n"
        "        self.act = functools.partial(_scaled, scale=scale)\n"
    )
    kinds = frozenset({"local_function"})

    def describe_what(self, facts: StoredObjectFacts) -> str:
        return f"local function {facts.name or ''}".rstrip()


class LocalClassOnModule(_StoredRule):
    """## What it does
    Checks for classes defined inside a function, or instances of them, stored on an
    `nn.Module`'s module tree.

    ## Why is this bad?
    pickle saves an object's class by qualified name; a class defined inside a function
    (`build.<locals>.Block`) cannot be looked up, so `torch.save(model)` fails when such a class
    or its instance is on the module tree.

    ## Fix safety
    There is no automatic fix: moving a class changes what its body can see. Define the class at
    module level.
    """

    code = "MC103"
    name = "local-class-on-module"
    summary = "a class defined inside a function (or its instance) stored on an nn.Module"
    bad_example = (
        "import torch.nn as nn\n\n"
        "def build():\n"
        "    class Block(nn.Module):\n        def forward(self, x):\n            return x\n\n"
        "    return nn.Sequential(Block())\n"
    )
    good_example = (
        "import torch.nn as nn\n\n"
        "class Block(nn.Module):\n    def forward(self, x):\n        return x\n\n"
        "def build():\n    return nn.Sequential(Block())\n"
    )
    kinds = frozenset({"local_class"})

    def describe_what(self, facts: StoredObjectFacts) -> str:
        return f"local class {facts.name or ''}".rstrip()


class UnpicklableAttribute(_StoredRule):
    """## What it does
    Reports live resources stored on an `nn.Module`'s module tree (open files, locks, threads,
    generators and other objects pickle refuses), each by its attribute path. Only the dynamic
    pass sees them: its pickle probe really runs `torch.save(model)` and names every attribute
    that fails.

    ## Why is this bad?
    These objects cannot be pickled, so `torch.save(model)` fails when one is stored on the
    module tree.

    ## Fix safety
    There is no automatic fix. Keep the resource off the module, or leave it out of the pickled
    state in `__getstate__`.
    """

    code = "MC104"
    name = "unpicklable-attribute"
    summary = "a live resource (file, lock, generator, ...) stored on an nn.Module"
    bad_example = (
        "import threading\nimport torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.lock = threading.Lock()\n"
    )
    good_example = (
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
    )
    kinds = frozenset({"unpicklable"})
    static = False  # the static pass cannot see these; the examples are checked dynamically

    def describe_what(self, facts: StoredObjectFacts) -> str:
        return f"{facts.type_name or 'object'}"


RULES: tuple[Rule, ...] = (
    LambdaOnModule(),
    LocalFunctionOnModule(),
    LocalClassOnModule(),
    UnpicklableAttribute(),
)


# ----- static extraction -----------------------------------------------------------------

def _pass_through() -> tuple[type, ...]:
    """The nodes a stored value passes through on its way up (made per file: libcst is imported
    only when a libcst extractor runs, see ``static.source.cst``)."""
    return (
        cst.Arg, cst.Element, cst.StarredElement, cst.List, cst.Tuple, cst.Set, cst.Dict,
        cst.DictElement, cst.StarredDictElement, cst.ListComp, cst.SetComp, cst.DictComp,
        cst.GeneratorExp, cst.IfExp, cst.BooleanOperation, cst.ParenthesizedWhitespace,
        cst.Subscript, cst.SubscriptElement, cst.Index,
    )


@dataclass
class _Scope:
    node: cst.CSTNode | None  # FunctionDef / ClassDef / None for the module
    local_defs: dict[str, tuple[str, cst.CSTNode]]  # name → (kind, its def)
    lambda_names: dict[str, cst.Lambda]


class _StorageVisitor(Visitor):
    """Finds lambdas and local defs that flow into a storing position, keeping a parent stack.

    A value is followed upwards through containers (lists, dicts, tuples, ``partial``) until
    something keeps it (a module constructor, ``self.x = ...``, ``nn.Sequential``, a hook) or
    uses it and lets it go (``sorted(key=...)``, ``filter(...)``, being called).
    """

    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.stack: list[cst.CSTNode] = []
        self.scopes: list[_Scope] = [_Scope(None, {}, {})]
        self.found: list[tuple[cst.CSTNode, StoredObjectFacts]] = []
        self.reported: set[int] = set()
        self.pass_through = _pass_through()

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
            if self._in_function():
                kind = "local_function" if isinstance(node, cst.FunctionDef) else "local_class"
                self.scopes[-1].local_defs[node.name.value] = (kind, node)
            self.scopes.append(_Scope(node, {}, {}))
        elif isinstance(node, cst.Assign) and isinstance(node.value, cst.Lambda):
            for target in node.targets:
                if isinstance(target.target, cst.Name):  # fn = lambda ...; stored later by name
                    self.scopes[-1].lambda_names[target.target.value] = node.value
        elif isinstance(node, cst.Lambda):
            # a lambda inside a lambda is looked at too, as inside a def: lifting the outer one
            # to a module-level function must not leave a finding for a second --fix
            self._consider(node, "lambda", None, node)
        elif isinstance(node, cst.Name) and not self._is_binding_name(node):
            kind = self._local_kind(node.value)
            if kind is not None:
                self._consider(node, kind, node.value, self._definition(node.value) or node)
        self.stack.append(node)
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, (cst.FunctionDef, cst.ClassDef)):
            self.scopes.pop()
        self.stack.pop()

    # -- helpers --
    def _in_function(self) -> bool:
        return any(isinstance(s.node, cst.FunctionDef) for s in self.scopes)

    def _lookup(self, name: str) -> tuple[str, cst.CSTNode] | None:
        """(kind, definition) of a local def or lambda-bound name visible here."""
        for scope in reversed(self.scopes):
            if name in scope.local_defs:
                return scope.local_defs[name]
            if name in scope.lambda_names:
                return "lambda", scope.lambda_names[name]
        return None

    def _local_kind(self, name: str) -> str | None:
        found = self._lookup(name)
        return found[0] if found else None

    def _definition(self, name: str) -> cst.CSTNode | None:
        """The lambda or def a local name is bound to: findings point where it is written."""
        found = self._lookup(name)
        return found[1] if found else None

    def _is_binding_name(self, node: cst.Name) -> bool:
        parent = self.stack[-1] if self.stack else None
        if isinstance(parent, (cst.FunctionDef, cst.ClassDef, cst.Param, cst.AssignTarget,
                               cst.Attribute, cst.Arg, cst.ImportAlias)):
            if isinstance(parent, cst.Arg):
                return parent.keyword is node
            if isinstance(parent, cst.Attribute):
                return parent.attr is node
            return True
        return False

    def _enclosing_class(self) -> cst.ClassDef | None:
        for scope in reversed(self.scopes):
            if isinstance(scope.node, cst.ClassDef):
                return scope.node
        return None

    def _consider(self, node: cst.CSTNode, kind: str, name: str | None, report_at: cst.CSTNode) -> None:
        storage = self._storage(node, kind)
        if storage is None or id(report_at) in self.reported:
            return
        how, certain = storage
        self.reported.add(id(report_at))
        is_lambda = kind == "lambda" and isinstance(report_at, cst.Lambda)
        captures = is_lambda and self._captures(report_at)
        blocker = lift_blocker(report_at) if is_lambda else ""
        self.found.append(
            (report_at, StoredObjectFacts(kind, how, certain, name, captures_locals=captures, lift_blocker=blocker))
        )

    def _storage(self, node: cst.CSTNode, kind: str) -> tuple[str, bool] | None:
        """How the value at ``node`` is stored on a module, walking up its parents."""
        child = node
        for depth in range(len(self.stack) - 1, -1, -1):
            parent = self.stack[depth]
            if isinstance(parent, cst.Call):
                if child is parent.func:
                    if kind != "local_class":
                        return None  # called right away, not stored
                    # instantiating a local class: follow the instance instead
                elif self._is_wrapper(parent):
                    pass  # partial(fn) / defaultdict(fn) holds fn: follow the wrapper
                else:
                    return self._call_storage(parent)
            elif isinstance(parent, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
                if isinstance(parent, cst.Assign) and child is not parent.value:
                    return None
                return self._assign_storage(parent)
            elif isinstance(parent, (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)):
                if child not in (getattr(parent, "elt", None), getattr(parent, "value", None)):
                    return None
            elif not isinstance(parent, self.pass_through):
                return None
            child = parent
        return None

    def _is_wrapper(self, call: cst.Call) -> bool:
        return self.source.qualname(call.func) in WRAPPERS

    def _call_storage(self, call: cst.Call) -> tuple[str, bool] | None:
        callee = dotted_name(call.func)
        if callee is None and isinstance(call.func, cst.Attribute) and STORING_METHODS.match(call.func.attr.value):
            callee = call.func.attr.value  # self.body[0].register_forward_hook(...): the method decides
        if callee is None:
            return None
        short = callee.rsplit(".", 1)[-1]
        if STORING_METHODS.match(short):
            if short in ("setattr", "__setattr__"):
                return self._setattr_storage(call)
            return f"passed to {short}()", True
        qual = self.source.qualname(call.func) or callee
        if qual in CONTAINERS:
            return f"put into {qual.rsplit('.', 1)[-1]}(...)", True
        local = self._lookup(callee)
        cls = local[1] if local and local[0] == "local_class" else self.source.local_classes.get(qual)
        if isinstance(cls, cst.ClassDef):
            is_module = self.source.is_module_class(cls)
            if is_module is False:
                return None
            if is_module:
                return f"passed to {short}(...)", True
            return f"passed to {short}(...), which may be an nn.Module (a base class is defined elsewhere)", False
        if never_module(qual) or qual.startswith(NOT_MODULES):
            return None
        if short[:1].isupper():
            return f"passed to {short}(...), a class defined elsewhere that may keep it on the model", False
        return None

    def _setattr_storage(self, call: cst.Call) -> tuple[str, bool] | None:
        """``setattr(self, name, fn)`` stores fn on self; on anything else it may."""
        first = call.args[0].value if call.args else None
        if isinstance(first, cst.Name) and first.value == "self":
            return self._self_storage("stored by setattr(self, ...)")
        return "stored by setattr() on an object that may be an nn.Module", False

    def _assign_storage(self, node: cst.Assign | cst.AugAssign | cst.AnnAssign) -> tuple[str, bool] | None:
        targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
        for target in targets:
            base = target
            while isinstance(base, (cst.Subscript, cst.Attribute)) and not _is_self_attr(base):
                base = base.value
            if _is_self_attr(base):
                return self._self_storage(f"assigned to {self.source.module.code_for_node(target)}")
        return None

    def _self_storage(self, how: str) -> tuple[str, bool] | None:
        """Storing on ``self``: certain in an nn.Module subclass, none in a plain class."""
        cls = self._enclosing_class()
        is_module = self.source.is_module_class(cls) if cls else None
        if is_module is False:
            return None
        if is_module:
            return how, True
        return f"{how}, and self may be an nn.Module (a base class is defined elsewhere)", False

    def _captures(self, node: cst.Lambda) -> bool:
        """Does the lambda read names that are neither its parameters nor module-level?"""
        params = {p.name.value for p in (*node.params.params, *node.params.kwonly_params,
                                         *node.params.posonly_params)}
        for star in (node.params.star_arg, node.params.star_kwarg):
            if isinstance(star, cst.Param):
                params.add(star.name.value)
        module_names = self.source.module_names
        return any(n not in params and n not in module_names and n not in BUILTINS for n in names_read(node.body))


def lift_blocker(node: cst.Lambda) -> str:
    """Why this lambda cannot become a module-level function as written, or '' (the MC101 fixer's first check)."""
    params = node.params
    for param in (*params.posonly_params, *params.params, *params.kwonly_params):
        if param.default is not None:
            try:
                ast.literal_eval(cst.Module(body=[]).code_for_node(param.default).strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return ("a parameter default that is not a literal is evaluated where the lambda is "
                        "written; moving it could change its value")
    body_names = names_read(node.body)
    if "super" in body_names or "__class__" in body_names:
        return "the lambda calls super(), which only works inside its class"
    yields = False

    class _Find(cst.CSTVisitor):
        def on_visit(self, child: cst.CSTNode) -> bool:
            nonlocal yields
            yields = yields or isinstance(child, (cst.Yield, cst.Await))
            return not yields

    walk(node.body, _Find())
    return "the lambda body uses yield or await" if yields else ""


def _is_self_attr(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self"


def extract(source: SourceFile) -> Iterator[tuple[cst.CSTNode, StoredObjectFacts]]:
    """Every lambda or local def in the file that ends up stored on a module."""
    visitor = _StorageVisitor(source)
    walk(source.module, visitor)
    return iter(visitor.found)


def describe(facts: StoredObjectFacts) -> str:
    """``lambda self.act``: what is stored, for notes."""
    return f"{facts.kind} {facts.name or ''}".rstrip()


FAMILY = Family(
    name="pickling", rules=RULES, facts_type=StoredObjectFacts, trigger=TRIGGER, extract=extract,
    describe=describe, nested_defs=NESTED_DEFS,
)
