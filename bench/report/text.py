"""Every user-facing string of the report, in English and Japanese. Sections look strings up
by key (Ctx.t); a key missing in one language fails the test that renders both."""

from __future__ import annotations

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "bottom": "Bottom line",
        "bottom_intro": "One figure per card for each model: every cloud run of the model "
        "projected onto the card and combined (range in brackets; measured when this run "
        "includes the PC itself). Interactive = at least {bar:g} tok/s decode.",
        "bottom_none": "No GPU measurement in this run: the speeds need a cloud GPU (or the "
        "PC) to be benched. The 16 GB fit below is computed from the models' architecture.",
        "bottom_failed": "Every GPU request failed for {models} (first error: {error}): no "
        "speed for them; their 16 GB fit is still computed.",
        "fits_col": "fits 16 GB?",
        "fits_yes": "yes",
        "fits_partial": "partly ({share} on the GPU, the rest from RAM)",
        "fits_no": "no (not even with RAM)",
        "fits_unknown": "unknown (not in the catalog)",
        "speed_cell": "{verdict}, {tok_s} tok/s ({low}–{high})",
        "measured_cell": "{verdict}, {tok_s} tok/s (measured)",
        "interactive_yes": "interactive",
        "interactive_no": "slow",
        "disagree_flag": "sources disagree: {detail}",
        "worth_title": "Is the {fast}'s extra speed worth its price?",
        "worth_cheaper": "For these models the {fast} is {gain} faster than the {slow} (median "
        "over {n} model(s), {lo} to {hi}) and costs {diff} less at launch MSRP (${fast_p:,.0f} "
        "vs ${slow_p:,.0f}): yes — faster and cheaper. Prices move: compare today's.",
        "worth_yes": "For these models the {fast} is {gain} faster than the {slow} (median over "
        "{n} model(s), {lo} to {hi}) for {diff} more at launch MSRP (${fast_p:,.0f} vs "
        "${slow_p:,.0f}, +{price_pct}): yes — the speed gain is larger than the price gain.",
        "worth_no": "For these models the {fast} is {gain} faster than the {slow} (median over "
        "{n} model(s), {lo} to {hi}) for {diff} more at launch MSRP (${fast_p:,.0f} vs "
        "${slow_p:,.0f}, +{price_pct}): not for speed alone — the price gain is larger.",
        "worth_unknown": "Not enough measurements in this run to compare the {fast} with the "
        "{slow}.",
        "avoid_title": "Avoid on 16 GB",
        "avoid_none": "None of these models needs to be avoided on 16 GB.",
        "avoid_spill": "{model}: does not fit 16 GB — {fit}; expect {speed}",
        "avoid_slow": "{model}: fits, but below {bar:g} tok/s on both cards ({speed})",
        "gpus": "GPUs compared",
        "gpus_intro": "Launch specs (INT8 and tensor FP16 dense; sparse = with 2:4 "
        "sparsity, where the architecture has it); usable VRAM as nvidia-smi reports it.",
        "vram": "VRAM GB",
        "usable": "usable MiB",
        "bandwidth": "bandwidth GB/s",
        "cores": "CUDA cores",
        "fp16": "tensor FP16 TFLOPS",
        "int8": "INT8 TOPS dense / sparse",
        "tensor_gen": "tensor cores",
        "msrp": "launch MSRP $",
        "gen_name": "gen {n}",
        "combined_row": "{card}: combined ({n} source(s))",
        "source_row": "from {target}",
        "disagree_short": "sources disagree",
        "backtest_summary": "Back-test (hold out each published point of every GPU with at "
        "least two; predict it from the others): {n} cases, median error {err}, truth inside "
        "the printed range {cov}, median range ±{width}. Reproduce: python -m bench backtest",
        "title": "gpu-rehearsal report",
        "run": "Run {run_id}: started {started}, finished {finished}; {n_ok} of {n} requests ok.",
        "targets": "Targets",
        "speed": "Speed per model",
        "speed_intro": "Mean ± standard deviation over measured requests ({workloads}). Each "
        "planned card gets one combined figure: every cloud GPU's measurement carried over to "
        "the card (decode: the speed model fitted to published points — bytes / (bandwidth x "
        "efficiency) + a fixed per-token cost; prefill and TTFT: tensor FP16 ratio), with the "
        "range the back-test supports; each source's figure is listed underneath.",
        "fit": "16 GB fit",
        "fit_intro": "Weights + KV cache ({kv}) + runtime overhead against {cards}. "
        "partial = whole layers spill to system RAM ({ram} GiB on the PC).",
        "share": "Share of the model on the GPU",
        "share_intro": "size_vram / size from /api/ps, mean per model and target; the last "
        "column is the share the fit predicts on 16 GB.",
        "cost": "Cost",
        "cost_intro": "$/h as recorded at deploy time; this run's cost counts bench time only "
        "(first request to last answer), not deploy or idle time.",
        "estimate": "Estimate vs actual",
        "estimate_intro": "What rig plan's estimator (rig.estimate) expected this run to take "
        "on each cloud target, stored in meta.json when the run started — its bench part only: "
        "setup and model pulls happened at deploy — against the wall time the run took and "
        "what that time cost at the rate the deploy recorded (compute + disk + public IP, "
        "$/h x hours; a spot VM's bill follows the spot price as it moves — on AWS make "
        "status reads it — so this is the price at deploy). Error = estimate / actual − 1: use "
        "it to check and recalibrate the estimator.",
        "est_time": "estimated",
        "est_range": "range (decode ±)",
        "actual_time": "actual",
        "est_usd": "estimated $",
        "actual_usd": "actual $",
        "rate": "$/h (all)",
        "est_basis_spans": "actual = the run's wall time on the target (meta.json spans)",
        "est_basis_results": "actual = first request to last answer (results.jsonl; this run "
        "recorded no spans)",
        "est_models": "Per model (one session only)",
        "est_decode": "decode tok/s estimated",
        "est_no_rate": "no rate recorded",
        "verdict": "Verdict",
        "verdict_intro": "Interactive = at least {bar:g} tok/s decode on the card (measured on "
        "the PC when present, else the median projection).",
        "best": "Best model per category",
        "best_intro": "Among models that fit 16 GB (or spill least): en by decode speed; ja by "
        "Japanese-script share; code by tests passed; long-context by correct answers, then "
        "speed.",
        "quality": "Long-context correctness and Japanese-script share",
        "load": "Model load times (not mirrored)",
        "load_intro": "Not mirrored: cloud block storage (EBS gp3 / Azure managed disks) "
        "loads models differently from the PC's NVMe SSD.",
        "pvm": "Projected vs measured",
        "pvm_intro": "The real PC (target kind local) against what the cloud measurements "
        "projected for its card.",
        "method": "Method and assumptions",
        "charts": "Charts",
        "model": "model",
        "target": "target",
        "gpu": "GPU",
        "kind": "kind",
        "instance": "instance",
        "region": "region",
        "spot": "spot",
        "price": "$/h",
        "price_source": "price source",
        "decode": "decode tok/s",
        "prompt": "prompt tok/s",
        "ttft": "TTFT s",
        "n": "n",
        "ctx": "ctx",
        "weights": "weights GiB",
        "kv": "KV GiB",
        "overhead": "overhead GiB",
        "total": "total GiB",
        "verdict_col": "verdict",
        "on_gpu": "on GPU",
        "max_ctx": "max ctx fully on GPU",
        "kv_full": "KV GiB at full context",
        "predicted_16": "predicted on 16 GB",
        "bench_time": "bench time",
        "run_cost": "this run $",
        "out_tokens": "output tokens",
        "per_m": "$ per 1M output tokens",
        "categories": "categories",
        "fits16": "fits 16 GB",
        "interactive": "interactive on {card}",
        "category": "category",
        "best_model": "best model",
        "why": "why",
        "case": "case",
        "correct": "correct",
        "ja_share": "Japanese-script share",
        "load_s": "cold load s (not mirrored)",
        "projected": "projected",
        "range": "range",
        "measured": "measured",
        "error": "error",
        "in_range": "in range",
        "projected_row": "{card} (projected from {target})",
        "yes": "yes",
        "no": "no",
        "cpu_only": "CPU only",
        "not_recorded": "not recorded",
        "none_gpu": "No GPU target in this run: nothing is projected. The local CPU demo "
        "measures the harness on this machine's CPU; its numbers are not GPU numbers and are "
        "never projected onto the PC.",
        "demo_note": "{label}: the embedded llama.cpp engine on this machine's CPU. Shown for "
        "completeness, never projected onto the PC.",
        "no_data": "No data for this section in this run.",
        "unknown_arch": "architecture unknown (not in the catalog)",
        "chart_decode": "Decode speed per model (hatched: projected, with range)",
        "chart_ttft": "Time to first token vs prompt length",
        "chart_share": "Share of the model on the GPU",
        "axis_tok_s": "tokens / s",
        "axis_prompt": "prompt tokens",
        "axis_ttft": "TTFT (s, server-side where reported)",
        "axis_share": "share on GPU (%)",
        "backtest": "Back-test (hold out each published point, predict it from the others):",
        "no_price": "no hourly price",
    },
    "ja": {
        "bottom": "結論",
        "bottom_intro": "モデルごと・カードごとに 1 つの数値：そのモデルのクラウドでの計測を"
        "すべてカードへ換算して統合したもの（括弧内は範囲。この実行に PC 自体が含まれる場合は"
        "実測）。対話的 = デコード {bar:g} tok/s 以上。",
        "bottom_none": "この実行には GPU の計測がないため、速度は出せない（クラウド GPU か PC "
        "でのベンチが必要）。下の 16 GB 判定はモデルの構造から計算したもの。",
        "bottom_failed": "{models} は GPU でのリクエストがすべて失敗したため速度はない（最初の"
        "エラー：{error}）。16 GB 判定は計算で示す。",
        "fits_col": "16 GB に収まるか",
        "fits_yes": "はい",
        "fits_partial": "一部（GPU 上 {share}、残りは RAM）",
        "fits_no": "いいえ（RAM を使っても無理）",
        "fits_unknown": "不明（カタログにない）",
        "speed_cell": "{verdict}、{tok_s} tok/s（{low}〜{high}）",
        "measured_cell": "{verdict}、{tok_s} tok/s（実測）",
        "interactive_yes": "対話的",
        "interactive_no": "遅い",
        "disagree_flag": "計測元どうしが食い違う：{detail}",
        "worth_title": "{fast} の速さは価格差に見合うか",
        "worth_cheaper": "これらのモデルでは {fast} は {slow} より {gain} 速く"
        "（{n} モデルの中央値、{lo}〜{hi}）、発売時の希望小売価格では {diff} 安い"
        "（${fast_p:,.0f} 対 ${slow_p:,.0f}）："
        "見合う — 速くて安い。価格は変わるので現在の価格も比べること。",
        "worth_yes": "これらのモデルでは {fast} は {slow} より {gain} 速く（{n} モデルの中央値、"
        "{lo}〜{hi}）、発売時の希望小売価格では {diff} 高い（${fast_p:,.0f} 対 "
        "${slow_p:,.0f}、+{price_pct}）：見合う — 速度の伸びが価格の伸びより大きい。",
        "worth_no": "これらのモデルでは {fast} は {slow} より {gain} 速く（{n} モデルの中央値、"
        "{lo}〜{hi}）、発売時の希望小売価格では {diff} 高い（${fast_p:,.0f} 対 "
        "${slow_p:,.0f}、+{price_pct}）：速度だけなら見合わない — 価格の伸びの方が大きい。",
        "worth_unknown": "この実行の計測だけでは {fast} と {slow} を比べられない。",
        "avoid_title": "16 GB では避けるべきモデル",
        "avoid_none": "16 GB で避けるべきモデルはない。",
        "avoid_spill": "{model}：16 GB に収まらない — {fit}。速度の目安 {speed}",
        "avoid_slow": "{model}：収まるが、どちらのカードでも {bar:g} tok/s 未満（{speed}）",
        "gpus": "比較した GPU",
        "gpus_intro": "発売時の仕様（INT8 とテンソル FP16 は密行列。sparse は 2:4 スパース性を"
        "使った値で、対応するアーキテクチャのみ）。使える VRAM は nvidia-smi の表示値。",
        "vram": "VRAM GB",
        "usable": "使える MiB",
        "bandwidth": "帯域 GB/s",
        "cores": "CUDA コア",
        "fp16": "テンソル FP16 TFLOPS",
        "int8": "INT8 TOPS 密 / sparse",
        "tensor_gen": "テンソルコア",
        "msrp": "発売時価格 $",
        "gen_name": "第 {n} 世代",
        "combined_row": "{card}：統合値（計測元 {n}）",
        "source_row": "{target} から",
        "disagree_short": "計測元が食い違う",
        "backtest_summary": "バックテスト（2 点以上ある GPU の公開値を 1 つずつ除き、残りから"
        "予測）：{n} ケース、誤差の中央値 {err}、表示した範囲に真値が入った割合 {cov}、範囲の幅の"
        "中央値 ±{width}。再現：python -m bench backtest",
        "title": "gpu-rehearsal レポート",
        "run": "実行 {run_id}：開始 {started}、終了 {finished}。{n} 件中 {n_ok} 件成功。",
        "targets": "ターゲット",
        "speed": "モデル別の速度",
        "speed_intro": "計測リクエストの平均 ± 標準偏差（{workloads}）。購入予定のカードごとに"
        "統合値を 1 つ示す：クラウド GPU の計測値をすべてそのカードへ換算したもの（デコード："
        "公開値に合わせた速度モデル＝バイト数 /（帯域 × 効率）＋トークンあたりの固定コスト、"
        "プリフィルと TTFT：テンソル FP16 性能比）で、バックテストに基づく範囲付き。各計測元の"
        "値はその下に示す。",
        "fit": "16 GB に収まるか",
        "fit_intro": "重み + KV キャッシュ（{kv}）+ ランタイムのオーバーヘッド を {cards} の "
        "VRAM と比較。partial = 一部の層がシステム RAM にはみ出す（PC は {ram} GiB）。",
        "share": "GPU に載ったモデルの割合",
        "share_intro": "/api/ps の size_vram / size（モデル・ターゲットごとの平均）。最後の列は "
        "16 GB での予測値。",
        "cost": "コスト",
        "cost_intro": "$/h はデプロイ時の記録値。今回の費用はベンチ時間のみ（最初のリクエスト"
        "から最後の応答まで）で、デプロイや待機時間は含まない。",
        "estimate": "見積もりと実績",
        "estimate_intro": "rig plan の見積もり（rig.estimate）が各クラウドターゲットでこの実行に"
        "かかると見込んだ時間（実行開始時に meta.json に保存。ベンチ部分のみ：セットアップと"
        "モデルの取得はデプロイ時に済んでいます）と、実際にかかった経過時間、およびデプロイ時に"
        "記録された単価（コンピュート＋ディスク＋パブリック IP、$/h × 時間。スポット VM の"
        "請求は変動するスポット価格に従うため（AWS では make status で確認できます）、"
        "これはデプロイ時の価格による値です）での費用の比較。"
        "誤差 = 見積もり / 実績 − 1。見積もりの検証と再調整に使います。",
        "est_time": "見積もり",
        "est_range": "範囲（デコード ±）",
        "actual_time": "実績",
        "est_usd": "見積もり $",
        "actual_usd": "実績 $",
        "rate": "$/h（合計）",
        "est_basis_spans": "実績 = ターゲットでの実行の経過時間（meta.json の spans）",
        "est_basis_results": "実績 = 最初のリクエストから最後の回答まで（results.jsonl。この実行"
        "には spans の記録がありません）",
        "est_models": "モデルごと（1 回の実行のみ）",
        "est_decode": "デコード tok/s 見積もり",
        "est_no_rate": "単価の記録なし",
        "verdict": "判定",
        "verdict_intro": "対話的 = カード上でデコード {bar:g} tok/s 以上（PC の実測があれば"
        "それを、なければ予測の中央値を使用）。",
        "best": "カテゴリ別のおすすめモデル",
        "best_intro": "16 GB に収まる（またははみ出しが最小の）モデルから：英語はデコード速度、"
        "日本語は日本語文字の割合、コードはテスト合格率、長文脈は正答率と速度で選ぶ。",
        "quality": "長文脈の正答と日本語文字の割合",
        "load": "モデルの読み込み時間（換算なし）",
        "load_intro": "換算しない：クラウドのブロックストレージ（EBS gp3 / Azure マネージド"
        "ディスク）と PC の NVMe SSD では読み込み方が異なる。",
        "pvm": "予測と実測の比較",
        "pvm_intro": "実際の PC（kind が local のターゲット）と、クラウドでの計測から予測した値。",
        "method": "手法と前提",
        "charts": "グラフ",
        "model": "モデル",
        "target": "ターゲット",
        "gpu": "GPU",
        "kind": "種類",
        "instance": "インスタンス",
        "region": "リージョン",
        "spot": "スポット",
        "price": "$/h",
        "price_source": "価格の出典",
        "decode": "デコード tok/s",
        "prompt": "プロンプト tok/s",
        "ttft": "TTFT 秒",
        "n": "件数",
        "ctx": "コンテキスト",
        "weights": "重み GiB",
        "kv": "KV GiB",
        "overhead": "オーバーヘッド GiB",
        "total": "合計 GiB",
        "verdict_col": "判定",
        "on_gpu": "GPU 上",
        "max_ctx": "GPU に収まる最大コンテキスト",
        "kv_full": "最大コンテキストでの KV GiB",
        "predicted_16": "16 GB での予測",
        "bench_time": "ベンチ時間",
        "run_cost": "今回の費用 $",
        "out_tokens": "出力トークン",
        "per_m": "出力 100 万トークンあたり $",
        "categories": "カテゴリ",
        "fits16": "16 GB に収まる",
        "interactive": "{card} で対話的",
        "category": "カテゴリ",
        "best_model": "おすすめ",
        "why": "理由",
        "case": "ケース",
        "correct": "正答",
        "ja_share": "日本語文字の割合",
        "load_s": "初回読み込み 秒（換算なし）",
        "projected": "予測",
        "range": "範囲",
        "measured": "実測",
        "error": "誤差",
        "in_range": "範囲内",
        "projected_row": "{card}（{target} からの予測）",
        "yes": "はい",
        "no": "いいえ",
        "cpu_only": "CPU のみ",
        "not_recorded": "記録なし",
        "none_gpu": "この実行には GPU のターゲットがないため、予測はしない。local CPU demo は"
        "このマシンの CPU でハーネスを計測したもので、GPU の数値ではなく、PC へは換算しない。",
        "demo_note": "{label}：このマシンの CPU で動く組み込み llama.cpp エンジン。参考として"
        "表示するが、PC へは換算しない。",
        "no_data": "この実行にはこの項目のデータがない。",
        "unknown_arch": "アーキテクチャ不明（カタログにない）",
        "chart_decode": "モデル別デコード速度（斜線：予測値と範囲）",
        "chart_ttft": "プロンプト長と最初のトークンまでの時間",
        "chart_share": "GPU に載ったモデルの割合",
        "axis_tok_s": "トークン / 秒",
        "axis_prompt": "プロンプトのトークン数",
        "axis_ttft": "TTFT（秒、サーバー計測があればその値）",
        "axis_share": "GPU 上の割合（%）",
        "backtest": "バックテスト（公開値を 1 つずつ除き、残りから予測）：",
        "no_price": "時間単価なし",
    },
}
