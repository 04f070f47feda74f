"""Student architectures: the table of named shapes and the one parser of `student_arch` names.

A name is a registered architecture or any `l<layers>-h<hidden>`. The table follows the released checkpoints'
config.json (microsoft/xtremedistil-l6-h256-uncased etc.): BERT-uncased vocabulary, intermediate = 4 x hidden,
8 heads for h256 (256 is not divisible by 12) and 12 for h384. Adding one is one `register_architecture` call.

No torch here: the config checks parse names before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .errors import ConfigError
from .registry import Registry

ARCH_PATTERN = re.compile(r"^l(\d+)-h(\d+)$")
HEADS_BY_HIDDEN = {256: 8, 384: 12, 512: 8, 768: 12, 1024: 16}


@dataclass(frozen=True)
class Architecture:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    # student_init values the study uses for it ("random" = random layers, usually with student_embeddings=pca)
    inits: tuple[str, ...] = dataclasses.field(default=(), compare=False)


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(
    name: str, *, layers: int, hidden: int, heads: int, intermediate: int, inits: tuple[str, ...] = ()
) -> Architecture:
    return ARCHITECTURES.add(name, Architecture(layers, hidden, heads, intermediate, tuple(inits)))


# The default: 3 of all-MiniLM-L6-v2's 6 layers (0, 2, 4), the offline study's student.
register_architecture("l3-h384", layers=3, hidden=384, heads=12, intermediate=1536, inits=("offline:all-MiniLM-L6-v2",))
# The paper's three students, exactly as their released configs (vocab 30522, max positions 512).
register_architecture("l6-h256", layers=6, hidden=256, heads=8, intermediate=1024, inits=("random",))
register_architecture(
    "l6-h384",
    layers=6,
    hidden=384,
    heads=12,
    intermediate=1536,
    inits=("nreimers/MiniLM-L6-H384-uncased", "offline:all-MiniLM-L6-v2"),
)
register_architecture(
    "l12-h384",
    layers=12,
    hidden=384,
    heads=12,
    intermediate=1536,
    inits=("microsoft/MiniLM-L12-H384-uncased", "random"),
)


def allowed_architectures() -> str:
    """What `student_arch` may be: the registered names (smallest first) and the pattern."""
    names = sorted(ARCHITECTURES, key=lambda n: (ARCHITECTURES.get(n).layers, ARCHITECTURES.get(n).hidden, n))
    return f"an architecture name like {', '.join(names)} (any l<layers>-h<hidden>, both at least 1)"


def default_heads(hidden: int) -> int:
    """The table's head count for this width, else the most heads that keep head dimension >= 32 (BERT-family heads
    are 32-64 wide)."""
    return HEADS_BY_HIDDEN.get(hidden) or next(
        (h for h in (16, 12, 8, 6, 4, 3, 2) if hidden % h == 0 and hidden // h >= 32), 1
    )


def architecture(name: str, heads: int | None = None) -> Architecture:
    """The shape of `student_arch=name`: a registered architecture or any `l<N>-h<M>` (N, M >= 1); the head count
    explicit, from the table, or chosen by `default_heads`. The one place a name is parsed."""
    if name in ARCHITECTURES:
        arch = ARCHITECTURES.get(name)
    else:
        match = ARCH_PATTERN.match(name)
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise ConfigError(f"student_arch={name!r} is not allowed; allowed: {allowed_architectures()}")
        layers, hidden = int(match.group(1)), int(match.group(2))
        arch = Architecture(layers, hidden, default_heads(hidden), 4 * hidden)
    if not heads or heads == arch.heads:
        return arch
    if arch.hidden % heads:
        raise ConfigError(f"student_heads={heads} does not divide hidden size {arch.hidden} of {name}; pick a divisor")
    return dataclasses.replace(arch, heads=heads)


def parse_arch(name: str) -> tuple[int, int]:
    """'l6-h384' -> (6, 384): (layers, hidden) of any name `architecture` accepts."""
    arch = architecture(name)
    return arch.layers, arch.hidden


def arch_problem(value: str) -> str | None:
    """Config check of `student_arch`: None if `architecture` accepts it, else what is allowed."""
    try:
        architecture(value)
    except ConfigError:
        return allowed_architectures()
    return None
