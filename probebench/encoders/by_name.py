"""A model named directly on the command line, without a registry entry.

`-e timm:vit_small_patch16_dinov3.lvd1689m`, `-e hf:facebook/dinov2-small@<revision>` and
`-e open_clip:ViT-B-16/laion2b_s34b_b88k` become an `EncoderEntry` made on the fly, validated like any entry
and named exactly as written (records and the leaderboard keep the name; file names use `paths.slug`). The
library is asked whether it knows the name when the entry is resolved, and a name it does not know is one
line.
"""

from __future__ import annotations

from pydantic import ValidationError

from probebench.encoders.registry import BY_NAME_RE, EncoderEntry
from probebench.errors import UserError

USAGE = "timm:NAME[.TAG], hf:ORG/REPO[@REVISION] or open_clip:MODEL/PRETRAINED_TAG"


def entry_for(name: str, family: str = "unlabelled") -> EncoderEntry:
    """`library:model` -> an entry of `family`, its fields filled from the name alone."""
    if not BY_NAME_RE.match(name):
        raise UserError(f"encoder {name!r}: name a model directly as {USAGE}")
    library, _, model = name.partition(":")
    if library == "timm":
        source = {"kind": "timm", "model": model}
        arch = model.split(".")[0]
    elif library == "hf":
        repo, _, revision = model.partition("@")
        if repo.count("/") != 1:
            raise UserError(f"encoder {name!r}: a Hugging Face model is hf:ORG/REPO, optionally @REVISION")
        source = {"kind": "transformers", "repo": repo, "revision": revision or "main", "model_type": None}
        arch = repo
    else:
        model_name, _, tag = model.partition("/")
        if not tag:
            raise UserError(f"encoder {name!r}: an open_clip model is open_clip:MODEL/PRETRAINED_TAG")
        source = {"kind": "open_clip", "model": model_name, "pretrained": tag}
        arch = model_name
    try:
        return EncoderEntry(
            name=name,
            family=family,
            method=model,
            arch=arch,
            source=source,
            notes="Named directly on the command line; no registry entry.",
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UserError(f"encoder {name!r}: {field}: {first['msg']}; name it as {USAGE}") from None
