"""`fit`, `project` and `report` subcommands for python -m bench.

Values are parsed here rather than by argparse types, so that bad input gives one line naming
the argument, the bad value and the fix (exit 2), never argparse's usage block or a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import mirror
from bench.mirror import MirrorError
from rig.catalog import load_catalog

EXIT_BAD_INPUT = 2


def add_commands(sub: Any) -> None:
    """Add fit, project, backtest and report to an argparse subparsers object."""
    _add_fit(sub)
    _add_project(sub)
    _add_backtest(sub)
    _add_report(sub)


def _add_fit(sub: Any) -> None:
    p = sub.add_parser(
        "fit",
        help="will a model fit the GPU's VRAM (weights + KV cache + overhead)?",
        description="Weights + KV cache + runtime overhead against a GPU's VRAM: fits, partial "
        "(share on the GPU) or no.",
    )
    p.add_argument("--model", required=True, help="Ollama tag, e.g. llama3:8b")
    p.add_argument("--ctx", default=str(mirror.DEFAULT_CTX), help="context length in tokens")
    p.add_argument("--kv-type", default="f16", help="KV cache type: f16 | q8_0 | q4_0")
    p.add_argument("--gpu", default="rtx-4060-ti-16gb", help="catalog GPU key")
    p.add_argument("--ram-gib", default=str(mirror.DEFAULT_PC_RAM_GIB), help="the PC's RAM")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--url", help="read the architecture from a running Ollama's /api/show")
    src.add_argument("--show-json", help="read the architecture from a saved /api/show reply")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("fit", cmd_fit))


def _add_project(sub: Any) -> None:
    p = sub.add_parser(
        "project",
        help="project a measured decode speed onto the planned PC's card (or every card)",
        description="Decode tok/s measured on one GPU, projected onto another (default: both "
        "planned cards) with a low-high range and its assumptions. --to all ranks every "
        "consumer card in the catalog: projected tok/s, range, fit verdict, tok/s per 100 $ of "
        "launch MSRP. --json prints one object for a single --to, else a list.",
    )
    p.add_argument("--gpu", required=True, help="catalog GPU key the speed was measured on")
    p.add_argument("--tok-s", required=True, help="measured decode tokens per second")
    p.add_argument("--model-gib", required=True, help="model weights in GiB (bytes read a token)")
    p.add_argument("--gpu-share", default="1", help="share of the model on the GPU, 0..1")
    p.add_argument("--to", action="append", help="target GPU key (repeatable), or all")
    p.add_argument("--model", help="catalog model tag: the fit verdict uses its KV cache too")
    p.add_argument("--ctx", default=str(mirror.DEFAULT_CTX), help="context for --model's fit")
    p.add_argument("--prompt-tok-s", help="measured prompt tok/s, to project prefill too")
    p.add_argument("--host-bw", help="measuring host's peak memory bandwidth, GB/s")
    p.add_argument("--pc-ram", default="ddr5-5600", help="the PC's memory kind (catalog key)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("project", cmd_project))


def _add_backtest(sub: Any) -> None:
    p = sub.add_parser(
        "backtest",
        help="the speed model's leave-one-out back-test on the catalog's published points",
        description="Hold out each published point of every GPU with at least two, predict it "
        "from the others (projected from the same publisher's run on another card where one "
        "exists), and print the table, the median error, the range's coverage and width.",
    )
    p.add_argument("--compare", action="store_true", help="also back-test the other model forms")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("backtest", cmd_backtest))


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write report.md and report.html for a results directory",
        description="Read results.jsonl + meta.json + the catalog; write report.md, report.html "
        "(charts embedded) and charts/*.png into RUN_DIR.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="results/<run-id>")
    p.add_argument("--lang", default="en", help="en | ja")
    p.set_defaults(func=_guarded("report", cmd_report))


Handler = Callable[[argparse.Namespace], int]


def _guarded(name: str, handler: Handler) -> Handler:
    """Turn a MirrorError into one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except MirrorError as exc:
            print(f"bench {name}: {exc.arg}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _num(arg: str, raw: str, fix: str, kind: type = float) -> Any:
    try:
        return kind(raw)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise MirrorError(arg, f"'{raw}' is not {what} — {fix}") from None


# ------------------------------------------------------------------------------------- fit


def cmd_fit(args: argparse.Namespace) -> int:
    ctx = _num("--ctx", args.ctx, "use a whole number of tokens, e.g. --ctx 8192", int)
    ram = _num("--ram-gib", args.ram_gib, "use the PC's RAM in GiB, e.g. --ram-gib 32")
    cat = load_catalog()
    if args.url is not None and not args.url.strip():
        raise MirrorError("--url", "'' is empty — e.g. --url http://127.0.0.1:11434")
    if args.url or args.show_json:
        flag = "--show-json" if args.show_json else "--url"
        where = args.show_json or args.url
        show, size = _read_show(args)
        if not isinstance(show, dict) or not isinstance(show.get("model_info"), dict):
            raise MirrorError(
                flag,
                f"{where}: the /api/show reply has no model_info table — Ollama 0.3 or newer "
                "sends it; save the reply of a current Ollama",
            )
        try:
            result = mirror.fit_from_show(
                show, ctx, args.kv_type, args.gpu, size, args.model, ram, cat
            )
        except MirrorError as exc:
            raise MirrorError(flag if exc.arg == "--url" else exc.arg, str(exc)) from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise MirrorError(
                flag,
                f"{where}: the /api/show reply holds a value that is not a number ({exc}) — save "
                'the reply again (curl http://127.0.0.1:11434/api/show -d \'{"model": "TAG"}\')',
            ) from None
    else:
        result = mirror.fit(args.model, ctx, args.kv_type, args.gpu, ram, cat)
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        print(render_fit(result, cat.gpus[args.gpu].name))
    return 0


def render_fit(r: mirror.FitResult, gpu_name: str) -> str:
    verdict = {
        "fits": "fits: the whole model on the GPU",
        "partial": f"partial: {r.gpu_layers}/{r.layers} layers on the GPU "
        f"({r.gpu_share:.0%}), the rest from system RAM",
        "no": "no: does not fit VRAM + RAM",
    }[r.verdict]
    lines = [
        f"{r.model} at {r.ctx} tokens ({r.kv_type} KV cache) on {gpu_name}",
        f"  weights       {r.weights_gib:7.2f} GiB",
        f"  KV cache      {r.kv_cache_gib:7.2f} GiB",
        f"  overhead      {r.overhead_gib:7.2f} GiB",
        f"  total         {r.total_gib:7.2f} GiB  vs  {r.vram_gib:.2f} GiB usable VRAM",
        f"  verdict       {verdict}",
    ]
    return "\n".join(lines + [f"  note: {n}" for n in r.notes])


def _read_show(args: argparse.Namespace) -> tuple[dict[str, Any], float | None]:
    if args.show_json:
        path = Path(args.show_json)
        try:
            return json.loads(path.read_text(encoding="utf-8")), None
        except (OSError, ValueError) as exc:
            raise MirrorError(
                "--show-json", f"'{path}' is not a readable /api/show JSON reply ({exc})"
            ) from None
    base = args.url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise MirrorError("--url", f"'{args.url}' is not a URL — e.g. --url http://127.0.0.1:11434")
    show = _http_json(f"{base}/api/show", {"model": args.model})
    tags = _http_json(f"{base}/api/tags", None)
    listed = tags.get("models") if isinstance(tags, dict) else None
    names = (args.model, f"{args.model}:latest")
    size = next(
        (m.get("size") for m in listed or [] if isinstance(m, dict) and m.get("name") in names),
        None,
    )
    return show, size


def _http_json(url: str, body: dict[str, Any] | None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    try:
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise MirrorError("--url", f"{url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MirrorError(
            "--url", f"{url} did not answer ({exc}) — is Ollama running there (ollama serve)?"
        ) from None


# --------------------------------------------------------------------------------- project


def cmd_project(args: argparse.Namespace) -> int:
    cat = load_catalog()
    tok_s = _num("--tok-s", args.tok_s, "the measured decode tok/s, e.g. --tok-s 35.5")
    gib = _num("--model-gib", args.model_gib, "the model's size in GiB, e.g. --model-gib 4.56")
    share = _num("--gpu-share", args.gpu_share, "a share 0..1, e.g. --gpu-share 0.62")
    ctx = _num("--ctx", args.ctx, "use a whole number of tokens, e.g. --ctx 8192", int)
    prompt = None
    if args.prompt_tok_s is not None:
        prompt = _num("--prompt-tok-s", args.prompt_tok_s, "prompt tok/s, e.g. 900")
    host = None if args.host_bw is None else _num("--host-bw", args.host_bw, "GB/s, e.g. 140")
    if args.pc_ram not in cat.ram:
        raise MirrorError(
            "--pc-ram", f"'{args.pc_ram}' is not a known memory kind — known: {', '.join(cat.ram)}"
        )
    weights = None
    if args.model is not None:
        mirror.fit(args.model, ctx, "f16", "rtx-4060-ti-16gb", cat=cat)  # checks --model, --ctx
        # what the GPU holds; --model-gib stays what a token reads (less for a MoE)
        weights = cat.models[args.model].download_gb * 1e9 / mirror.GIB_BYTES
    pc_bw = cat.ram[args.pc_ram].bandwidth_gbs
    if args.to and "all" in args.to:
        if len(args.to) > 1:
            raise MirrorError("--to", "'all' ranks every consumer card — give it alone")
        mirror.check_gpu(args.gpu, cat, "--gpu")
        rows = mirror.rank_all(
            args.gpu, tok_s, gib, share, args.model, ctx, host, pc_bw, cat=cat, weights_gib=weights
        )
        if args.json:
            print(json.dumps([r.as_dict() for r in rows], ensure_ascii=False))
        else:
            print(render_ranking(rows, args, cat))
        return 0
    targets = args.to or [k for k, g in cat.gpus.items() if g.role == "planned"]
    out = []
    for to in targets:
        share_to = None
        if args.model is not None:
            mirror.check_gpu(to, cat, "--to")
            f = mirror.fit(args.model, ctx, "f16", to, cat=cat)
            if f.verdict == "no":
                raise MirrorError(
                    "--ctx",
                    f"{args.model} at {ctx} tokens needs {f.total_gib:.3g} GiB: more than "
                    f"{to}'s VRAM plus the RAM the PC leaves free, so it cannot run there — "
                    "lower --ctx or pick a smaller model",
                )
            share_to = f.gpu_share
        p = mirror.project(
            args.gpu, tok_s, gib, share, to, host, pc_bw, prompt, cat, share_to,
            weights_gib=weights,
        )  # fmt: skip
        out.append(p)
    if args.json:
        data = [p.as_dict() for p in out]
        print(json.dumps(data[0] if args.to and len(args.to) == 1 else data, ensure_ascii=False))
    else:
        print("\n\n".join(render_projection(p, cat) for p in out))
    return 0


def render_projection(p: mirror.Projection, cat: Any) -> str:
    src, dst = cat.gpus[p.gpu_from].name, cat.gpus[p.gpu_to].name
    lines = [
        f"{p.measured_tok_s:g} tok/s on {src} ({p.model_gib:g} GiB, {p.gpu_share:.0%} on GPU)",
        f"  -> {dst}: {p.projected_tok_s:.1f} tok/s (range {p.low_tok_s:.1f} - {p.high_tok_s:.1f})",
    ]
    if p.prompt_tok_s is not None:
        lines.append(f"  prefill: {p.prompt_tok_s:.0f} prompt tok/s")
    return "\n".join(lines + [f"  assumes: {a}" for a in p.assumptions])


def render_ranking(rows: list[mirror.RankRow], args: argparse.Namespace, cat: Any) -> str:
    src = cat.gpus[args.gpu].name
    head = (
        f"{args.tok_s} tok/s on {src} ({args.model_gib} GiB): every consumer card, fastest first\n"
        f"{'card':40} {'tok/s':>7} {'range':>13} {'fit':>8} {'on GPU':>7} {'MSRP $':>7} "
        f"{'tok/s per 100 $':>15}"
    )
    lines = [head, "-" * len(head.splitlines()[-1])]
    for r in rows:
        if r.projected_tok_s is None:  # does not fit VRAM + RAM: no speed to give
            speed, rng, per = "—", "cannot run", "—"
        else:
            speed, rng = f"{r.projected_tok_s:.1f}", f"{r.low_tok_s:.0f}-{r.high_tok_s:.0f}"
            per = f"{r.tok_s_per_100usd:.1f}"
        lines.append(
            f"{r.name.replace('NVIDIA GeForce ', ''):40} {speed:>7} {rng:>13} {r.verdict:>8} "
            f"{r.gpu_share:7.0%} {r.launch_msrp_usd:7.0f} {per:>15}"
        )
    lines.append(f"fit: {rows[0].fit_basis}" if rows else "no consumer card in the catalog")
    lines.append("prices: launch MSRP (a used RTX 3090 costs far less than its 2020 MSRP)")
    return "\n".join(lines)


def cmd_backtest(args: argparse.Namespace) -> int:
    from bench import speed

    cat = load_catalog()
    bt = speed.back_test(cat)
    variants = {v: speed.back_test(cat, v) for v in speed.VARIANTS} if args.compare else {}
    if args.json:
        data = bt.as_dict()
        if variants:
            data["variants"] = {v: _variant_summary(b, cat) for v, b in variants.items()}
        print(json.dumps(data, ensure_ascii=False))
        return 0
    lines = bt.lines()
    if variants:
        lines += ["", f"model forms (projections use {speed.DEFAULT_VARIANT}):"]
        for v, b in variants.items():  # unrounded, so the chosen form reads as above
            lines.append(
                f"  {v:15} median error {b.median_abs_error:.1%}, inside range "
                f"{b.coverage:.0%}, range +/-{b.median_half_width:.0%}, faster card "
                f"projected slower in {speed.monotonicity_violations(b.model, cat)} pair(s) — "
                f"{speed.VARIANTS[v]}"
            )
    print("\n".join(lines))
    return 0


def _variant_summary(bt: Any, cat: Any) -> dict[str, Any]:
    from bench import speed

    return {
        "median_abs_error": round(bt.median_abs_error, 4),
        "coverage": round(bt.coverage, 4),
        "median_half_width": round(bt.median_half_width, 4),
        "monotonicity_violations": speed.monotonicity_violations(bt.model, cat),
    }


# ---------------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report  # matplotlib loads only when a report is written

    if args.lang not in report.LANGS:
        raise MirrorError("--lang", f"'{args.lang}' is not a report language — use en or ja")
    run_dir = Path(args.run_dir)
    problem = report.check_run_dir(run_dir)
    if problem:
        raise MirrorError("RUN_DIR", problem)
    try:
        written = report.write_report(run_dir, args.lang)
    except OSError as exc:
        where = exc.filename or run_dir
        raise MirrorError(
            "RUN_DIR",
            f"cannot write the report: {where}: {exc.strerror or exc} — move that path out of "
            "the way (the report writes report.md, report.html and charts/ there), then run again",
        ) from None
    for path in written:
        print(path)
    return 0
