"""`rig models list | add | remove`: the models the rehearsal knows, and adding your own.

`rig models add` reads a model's architecture instead of asking you for a dozen fields:
- from a GGUF file's header, with `gguf` (llama.cpp's own reader, pinned in pyproject.toml);
- or from Ollama's `/api/show` of a pulled model (its `model_info` holds the same GGUF keys):
  a server you name with --url, a deployed VM from .state/ with --target (through the same
  SSH tunnel as the bench), or a saved payload with --show-json.
It writes a cited entry to your models file (rig.models.toml beside rig.toml; see
rig.catalog.USER_MODELS), then loads the whole catalog again to validate it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rig.catalog import USER_MODELS, load_catalog, read_user_models, user_models_path
from rig.catalog.schema import Model
from rig.clihelp import path_arg
from rig.problems import CommandError
from rig.profile import toml_literal
from rig.state import STATE_DIR

EXIT_INVALID = 2
CATEGORIES = ("general", "ja", "code", "long-context")
LOCAL_OLLAMA = "http://127.0.0.1:11434"
# Ollama model names: lowercase letters, digits, . _ - and / (namespace), then :tag.
TAG = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")
HEADER = """\
# Your own models, added with `rig models add` (or by hand: same fields as
# rig/catalog/models.toml). Every entry cites a source below. This file is yours: it is kept
# out of git and no upgrade overwrites it. Check it with: rig models list
"""


class ModelsError(CommandError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=EXIT_INVALID)


@dataclass
class Found:
    """What a reader learned: the GGUF keys (model_info) plus where they came from."""

    info: dict[str, Any]
    source_key: str
    source: dict[str, Any]  # title, url, as_of
    size_bytes: float | None = None  # the weights' bytes (file size, or /api/tags size)
    quantization: str | None = None
    name: str | None = None
    notes: list[str] = field(default_factory=list)
    estimated: set[str] = field(default_factory=set)  # fields that are estimates


# ------------------------------------------------------------------------------- readers


def _file_type_name(value: Any) -> str | None:
    import gguf

    try:
        name = gguf.LlamaFileType(int(value)).name  # e.g. MOSTLY_Q4_K_M
    except (ValueError, TypeError):
        return None
    return name.removeprefix("MOSTLY_").replace("GUESSED", "").strip("_") or None


def read_gguf(path: Path) -> Found:
    """The header of a GGUF file (llama.cpp's reader; memory-mapped, the weights stay on disk)."""
    try:
        import gguf
    except ModuleNotFoundError:
        raise ModelsError(
            "rig models add FILE.gguf needs the gguf package (part of the base install) — "
            "make setup-bench, or: pip install -e ."
        ) from None
    if path.is_dir():
        raise ModelsError(f"{path}: is a directory — give the path of a .gguf model file in it")
    if not path.is_file():
        raise ModelsError(f"{path}: no such file — give the path of a .gguf model file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # a parser on untrusted bytes: any failure means a bad file
        why = f"{exc.__class__.__name__}: {exc}".strip().rstrip(":")
        raise ModelsError(
            f"{path}: not a GGUF file, or one cut short (a download that did not finish?) — "
            f"the reader says {why}; download it again or give another .gguf file"
        ) from None
    info: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith(("tokenizer.", "GGUF.")):
            continue  # vocabularies: large and not needed for the memory estimate
        try:
            info[key] = fld.contents()
        except (ValueError, IndexError, TypeError):
            continue
    if "general.parameter_count" not in info:
        info["general.parameter_count"] = sum(int(t.n_elements) for t in reader.tensors)
    size = path.stat().st_size
    quant = _file_type_name(info.get("general.file_type"))
    today = dt.date.today()
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-")
    return Found(
        info=info,
        source_key=f"gguf-{stem}",
        source={
            "title": f"GGUF header of {path.name} ({size:,} bytes), read by rig models add",
            "url": path.resolve().as_uri(),
            "as_of": today,
        },
        size_bytes=float(size),
        quantization=quant,
        name=info.get("general.name"),
    )


def _get_json(url: str, body: dict[str, Any] | None = None, timeout: float = 15) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def read_show(tag: str, url: str, where: str) -> Found:
    """Ollama's /api/show for `tag` (and its size from /api/tags) at `url`."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ModelsError(f"--url {url!r}: write an http:// URL, e.g. {LOCAL_OLLAMA}")
    try:
        show = _get_json(f"{base}/api/show", {"model": tag})
    except urllib.error.HTTPError as exc:
        said = exc.read().decode(errors="replace")[:200]
        raise ModelsError(
            f"{where}: /api/show for {tag!r} answered {exc.code} ({said.strip()}) — pull it "
            f"first (ollama pull {tag}) or check the tag"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelsError(
            f"{where}: no Ollama answered at {base} ({reason}) — start it (ollama serve), or "
            "name a deployed VM with --target, or a saved payload with --show-json"
        ) from None
    size = None
    try:
        for entry in _get_json(f"{base}/api/tags").get("models", []):
            if tag in (entry.get("name"), entry.get("model")):
                size = float(entry["size"])
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        size = None
    version = None
    try:
        version = _get_json(f"{base}/api/version").get("version")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        version = None
    found = from_show(show, tag, f"{base}/api/show", f"Ollama {version}" if version else "Ollama")
    found.size_bytes = size
    return found


def from_show(show: dict[str, Any], tag: str, url: str, server: str) -> Found:
    if not isinstance(show, dict) or not isinstance(show.get("model_info"), dict):
        raise ModelsError(
            f"{url}: the /api/show answer has no model_info — Ollama 0.3 or newer returns it"
        )
    details = show.get("details") or {}
    slug = re.sub(r"[^a-z0-9._-]+", "-", tag.lower()).strip("-")
    return Found(
        info=dict(show["model_info"]),
        source_key=f"ollama-show-{slug}",
        source={
            "title": f"/api/show of {tag} from {server}, read by rig models add",
            "url": url,
            "as_of": dt.date.today(),
        },
        quantization=details.get("quantization_level"),
    )


# ------------------------------------------------------------------------------- the entry


def _arch_key(info: dict[str, Any], name: str) -> Any:
    arch = info.get("general.architecture")
    return info.get(f"{arch}.{name}")


def entry_for(tag: str, found: Found, categories: list[str], name: str | None) -> dict[str, Any]:
    """The catalog fields, by the rules llama.cpp applies when a key is absent."""
    info = found.info
    arch = info.get("general.architecture")
    if not arch:
        raise ModelsError(f"{tag}: the metadata names no general.architecture — not a model file?")
    blocks = _arch_key(info, "block_count")
    heads = _arch_key(info, "attention.head_count")
    kv_heads = _arch_key(info, "attention.head_count_kv") or heads  # absent: no GQA
    emb = _arch_key(info, "embedding_length")
    if isinstance(heads, list | tuple):  # per-layer head counts (some architectures)
        heads = max(heads)
    if isinstance(kv_heads, list | tuple):
        kv_heads = max(kv_heads)
    head_dim = emb // heads if emb and heads else None
    k_len = _arch_key(info, "attention.key_length") or head_dim
    v_len = _arch_key(info, "attention.value_length") or k_len
    ctx = _arch_key(info, "context_length")
    missing = [
        label
        for label, value in (
            (f"{arch}.block_count", blocks),
            (f"{arch}.attention.head_count_kv", kv_heads),
            (f"{arch}.attention.key_length", k_len),
            (f"{arch}.context_length", ctx),
        )
        if not value
    ]
    if missing:
        raise ModelsError(
            f"{tag}: the metadata lacks {', '.join(missing)} — add the entry by hand to "
            f"{USER_MODELS} with a cited source (see rig/catalog/models.toml for the fields)"
        )
    from bench.mirror import BITS_PER_WEIGHT

    params = info.get("general.parameter_count")
    quant = found.quantization or "unknown"
    size = found.size_bytes
    estimated = set(found.estimated)
    bpw = BITS_PER_WEIGHT.get(str(quant).upper())
    if size is None:
        if not params or bpw is None:
            raise ModelsError(
                f"{tag}: cannot size the weights (no /api/tags size, parameter_count {params}, "
                f"quantization {quant!r}) — pass the size with --size-gb"
            )
        size = params * bpw / 8
        estimated.add("download_gb")
    if not params:
        if bpw is None:
            raise ModelsError(
                f"{tag}: the metadata gives no general.parameter_count and the quantization "
                f"{quant!r} does not tell it from the size — add the entry by hand to "
                f"{USER_MODELS} with a cited source (see rig/catalog/models.toml for the fields)"
            )
        params = size * 8 / bpw
        estimated.add("parameters_b")
    remarks = [f"Added by rig models add on {dt.date.today().isoformat()}."]
    window = _arch_key(info, "attention.sliding_window")
    if window:
        remarks.append(
            f"Sliding-window attention ({window} tokens) on some layers: the KV figure, which "
            "counts every layer at full context, is an upper bound."
        )
    if _arch_key(info, "expert_count"):
        remarks.append(
            f"Mixture of experts ({_arch_key(info, 'expert_used_count')} of "
            f"{_arch_key(info, 'expert_count')} experts per token)."
        )
    if "download_gb" in estimated:
        remarks.append(f"Size estimated from the parameter count at {quant}.")
    try:
        entry: dict[str, Any] = {
            "name": name or found.name or tag,
            "family": str(arch),
            "categories": categories,
            "parameters_b": round(float(params) / 1e9, 3),
            "quantization": str(quant),
            "download_gb": round(size / 1e9, 3),
            "context_length": int(ctx),
            "block_count": int(blocks),
            "head_count_kv": int(kv_heads),
            "key_length": int(k_len),
            "value_length": int(v_len),
            "source": found.source_key,
            "remark": " ".join(remarks),
        }
    except (TypeError, ValueError) as exc:
        raise ModelsError(
            f"{tag}: the metadata holds a value that is not a number ({exc}) — the file or "
            f"payload is damaged; add the entry by hand to {USER_MODELS} if you know the figures"
        ) from None
    if estimated:
        entry["field_sources"] = {f: "rehearsal-estimate" for f in sorted(estimated)}
    return entry


# ------------------------------------------------------------------------------- the file


def _toml(value: Any) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string is a JSON string
    return toml_literal(value)


def render_file(sources: dict[str, dict[str, Any]], models: dict[str, dict[str, Any]]) -> str:
    out = [HEADER]
    for key, src in sources.items():
        out.append(f"[sources.{json.dumps(key)}]")
        out += [f"{k} = {_toml(v)}" for k, v in src.items()]
        out.append("")
    for tag, entry in models.items():
        out.append(f"[models.{json.dumps(tag)}]")
        # TOML has no null: an unset optional field (e.g. active_parameters_b) is left out.
        out += [f"{k} = {_toml(v)}" for k, v in entry.items() if v is not None]
        out.append("")
    return "\n".join(out)


def _raw(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    if not path.is_file() and not path.is_dir():
        return {}, {}
    sources, models = read_user_models(path)  # validates what is already there
    src = {k: v.model_dump(exclude={"key"}) for k, v in sources.items()}
    mod = {
        k: {f: x for f, x in v.model_dump(exclude={"tag"}).items() if x not in ({}, "")}
        for k, v in models.items()
    }
    return src, mod


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _models_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        # The catalog loads the same file, so the entry is validated where it will be read.
        os.environ["RIG_MODELS"] = str(args.file)
        load_catalog.cache_clear()
    path = user_models_path()
    if path is None:
        raise ModelsError("RIG_MODELS is empty (no user models file) — pass --file PATH")
    flag = (
        "--file" if args.file is not None else "RIG_MODELS" if os.environ.get("RIG_MODELS") else ""
    )
    named = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise ModelsError(f"{named}: is a directory — name a TOML file, e.g. {path / USER_MODELS}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ModelsError(
            f"{named}: the directory {parent} does not exist — create it first, or name a file "
            "in an existing directory"
        )
    return path


# ------------------------------------------------------------------------------- commands


def cmd_add(args: argparse.Namespace, console: Console) -> int:
    source = args.source
    cats = list(dict.fromkeys(args.category or ["general"]))
    if not source.strip():
        raise ModelsError(
            "TAG|GGUF_PATH: '' is empty — give an Ollama tag (e.g. qwen3:8b) or a .gguf file"
        )
    if args.tag is not None and not args.tag.strip():
        raise ModelsError("--tag '': is empty — give the Ollama name, e.g. --tag my-model:q4")
    if args.size_gb is not None and not (math.isfinite(args.size_gb) and args.size_gb > 0):
        raise ModelsError(
            f"--size-gb {args.size_gb:g}: not a size — give the weights' GB, e.g. --size-gb 4.9"
        )
    path = _models_file(args)
    if Path(source).expanduser().is_dir():
        raise ModelsError(f"{source}: is a directory — give the path of a .gguf model file in it")
    if source.endswith(".gguf") or Path(source).is_file():
        # GGUFReader also parses the vocabulary: ~10 s for a 262k-token one on 2 cores.
        console.print(f"reading the GGUF header of {source} ...", highlight=False, markup=False)
        found = read_gguf(Path(source).expanduser())
        tag = args.tag or found.source_key.removeprefix("gguf-")
        how = (
            f"to run it in Ollama: a Modelfile with `FROM {Path(source).expanduser().resolve()}`"
            f", then ollama create {tag} -f Modelfile"
        )
    else:
        tag = args.tag or source
        if args.show_json:
            try:
                show = json.loads(Path(args.show_json).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelsError(f"--show-json {args.show_json}: cannot read it ({exc})") from None
            found = from_show(show, tag, Path(args.show_json).resolve().as_uri(), "a saved payload")
        elif args.target:
            found = _show_via_target(tag, source, args.target, args.state_dir)
        else:
            found = read_show(source, args.url, f"--url {args.url}")
        how = f"Ollama pulls it as {tag}"
    if not TAG.match(tag):
        raise ModelsError(
            f"--tag {tag!r}: an Ollama name is lowercase letters, digits, . _ - / and an "
            "optional :tag — e.g. --tag gemma3-270m:q4_k_m"
        )
    if args.size_gb is not None:
        found.size_bytes = args.size_gb * 1e9
    entry = entry_for(tag, found, cats, args.name)
    cat = load_catalog()
    if tag in cat.models and tag not in cat.user_models and not args.replace:
        raise ModelsError(
            f"{tag} is already in the shipped catalog ({cat.models[tag].name}) — pass --replace "
            f"to use your own figures for it (written to {path})"
        )
    sources, models = _raw(path)
    if tag in models and not args.replace:
        raise ModelsError(f"{tag} is already in {path} — pass --replace to overwrite it")
    sources[found.source_key] = found.source
    models[tag] = entry
    used = {m["source"] for m in models.values()}
    sources = {k: v for k, v in sources.items() if k in used}
    text = render_file(sources, models)
    # Validate before writing: the whole catalog must load with the new entry in it.
    try:
        Model(tag=tag, **entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelsError(
            f"{tag}: {where} = {first.get('input')!r} read from {found.source['url']}: "
            f"{first['msg'].lower()} — the file or payload looks damaged; pass --size-gb for a "
            f"size, or add the entry by hand to {USER_MODELS}"
        ) from None
    previous = path.read_text(encoding="utf-8") if path.is_file() else None
    _write(path, text)
    load_catalog.cache_clear()
    try:
        load_catalog()
    except Exception:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            _write(path, previous)
        load_catalog.cache_clear()
        raise
    model = load_catalog().models[tag]
    console.print(
        f"added {tag} to {path}: {model.family}, {model.parameters_b:g}B params, "
        f"{model.quantization}, {model.download_gb:g} GB, context {model.context_length:,}, "
        f"{model.block_count} layers x {model.head_count_kv} KV heads x "
        f"({model.key_length}+{model.value_length})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    kv = model.block_count * model.head_count_kv * (model.key_length + model.value_length) * 2
    console.print(
        f"  KV cache (f16): {kv * 4096 / 2**30:.2f} GiB at 4k context, "
        f"{kv * model.context_length / 2**30:.2f} GiB at its full {model.context_length:,}",
        highlight=False,
        markup=False,
    )
    console.print(
        f"  source: {found.source['title']}; {how}; bench it by adding {json.dumps(tag)} "
        "to bench.models in rig.toml",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return 0


def _show_via_target(tag: str, model: str, target: str, state_dir: Path) -> Found:
    """/api/show on a deployed VM, through the bench's SSH tunnel (Ollama stays on loopback)."""
    from bench.targets import SshTunnel, TargetError, from_state_file
    from rig.state import path_for

    path = path_for(target, state_dir)
    if not path.is_file():
        known = sorted(p.stem for p in state_dir.glob("*.json") if not p.name.startswith("_"))
        raise ModelsError(
            f"--target {target!r}: no such VM in {state_dir}/ (deployed: "
            f"{', '.join(known) or 'none'}) — see make status"
        )
    try:
        spec = from_state_file(path)
        if spec.remote is None:
            raise TargetError(f"{path}: records no SSH access to the VM — redeploy it")
        tunnel = SshTunnel(spec.remote)
        url = tunnel.open()
    except TargetError as exc:
        raise ModelsError(str(exc)) from None
    try:
        found = read_show(model, url, f"--target {target}")
    finally:
        tunnel.close()
    found.source["title"] = found.source["title"].replace(url, f"{target} ({spec.info.label})")
    found.source["url"] = f"ssh://{spec.remote.user}@{spec.remote.host}/api/show"
    return found


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    cat = load_catalog()
    if args.json:
        print(
            json.dumps(
                [
                    {**m.model_dump(), "yours": m.tag in cat.user_models}
                    for m in cat.models.values()
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    table = Table(title="Models (rig/catalog/models.toml + your rig.models.toml)")
    for col in ("tag", "GB", "quant", "context", "for", "source"):
        table.add_column(col, overflow="fold")
    for m in cat.models.values():
        table.add_row(
            m.tag + (" (yours)" if m.tag in cat.user_models else ""),
            f"{m.download_gb:g}",
            m.quantization,
            f"{m.context_length:,}",
            ", ".join(m.categories),
            m.source,
        )
    console.print(table)
    return 0


def cmd_remove(args: argparse.Namespace, console: Console) -> int:
    path = _models_file(args)
    sources, models = _raw(path)
    if args.tag not in models:
        shipped = args.tag in load_catalog().models
        raise ModelsError(
            f"{args.tag!r} is not in {path}"
            + (" (it is a shipped catalog model: those stay)" if shipped else "")
            + f" — yours: {', '.join(models) or 'none'}"
        )
    del models[args.tag]
    used = {m["source"] for m in models.values()}
    _write(path, render_file({k: v for k, v in sources.items() if k in used}, models))
    load_catalog.cache_clear()
    console.print(f"removed {args.tag} from {path}", highlight=False, markup=False)
    return 0


def add_commands(commands: Any) -> None:
    models = commands.top.add_parser(
        "models", help="the models the rehearsal knows; add your own from a GGUF or Ollama"
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    lst = sub.add_parser("list", help="every model with its size, architecture and source")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=cmd_list)

    add = sub.add_parser(
        "add",
        help="add a model: read its architecture from a GGUF file or from Ollama's /api/show",
        description="TAG (a model pulled in Ollama) or GGUF_PATH (a .gguf file).",
    )
    add.add_argument("source", metavar="TAG|GGUF_PATH", help="an Ollama tag or a .gguf file")
    add.add_argument(
        "--tag", help="the Ollama name to file it under (default: the TAG, or the file's name)"
    )
    add.add_argument("--name", help="a display name (default: the file's general.name)")
    add.add_argument(
        "--category",
        action="append",
        choices=CATEGORIES,
        help="what it is for, repeatable (default: general)",
    )
    add.add_argument(
        "--url",
        default=LOCAL_OLLAMA,
        help=f"the Ollama to ask for a TAG (default: {LOCAL_OLLAMA})",
    )
    add.add_argument("--target", help="ask a deployed VM from .state/ (through an SSH tunnel)")
    add.add_argument("--show-json", help="a saved /api/show answer instead of asking a server")
    add.add_argument("--size-gb", type=float, help="the weights' size when no server reports it")
    add.add_argument("--replace", action="store_true", help="overwrite an entry for the same tag")
    add.add_argument("--file", type=path_arg, help=f"the models file (default: ./{USER_MODELS})")
    add.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=argparse.SUPPRESS)
    add.set_defaults(func=cmd_add)

    rm = sub.add_parser("remove", help="remove one of your own models")
    rm.add_argument("tag", help="the tag of a model you added (rig models list marks them)")
    rm.add_argument("--file", type=path_arg, help=f"the models file (default: ./{USER_MODELS})")
    rm.set_defaults(func=cmd_remove)
