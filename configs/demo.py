"""The offline demo (the README's first command): about 12 minutes on a 2-core CPU.

Prepare the assets once (`python -m hyperx_jax.assets prepare`), then

  python -m hyperx_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m hyperx_jax.main --config=configs/demo.py:method=task_adapters --workdir=/tmp/demo_ta

Backbone: multilingual-e5-small (XLM-R architecture, pretrained, frozen). Training data:
  - real Turkish POS (UD-style treebank, Google universal tags mapped to UPOS): pos:tr
  - an XNLI-shaped pair task, "is B a translation of the English A?" (from gettext catalogues),
    trained in German and French: pairs:de, pairs:fr
  - masked-LM text in Arabic and Spanish (gettext catalogues): mlm:ar, mlm:es
Evaluated on pos:tr and pairs:de (trained), pairs:tr (a task-language pair never trained; Turkish
seen only through POS), and pairs:ar, pairs:es (languages seen only through masked-LM).

The checkpoint reported is the one with the best German dev pairs (evaluated every 100 steps
with each checkpoint; a trained pair, as XTREME selects on English dev); the test pairs are
evaluated once, on that checkpoint.

`language_source=typology|learned|both` picks the hypernetwork's language vector (docs/method.md,
section 2). The default, `typology`, projects each language's URIEL typology features, so
languages seen only through masked LM, or not at all, still get a vector of their own; `learned`
is the paper's embedding table. `held_out=ja+ru+zh_CN` adds the pair task in languages held out
completely (no pairs, no MLM: ids with no training stream), evaluated zero-shot; the learned
source gives such languages the mean of the trained languages' rows. `mlm=ar+es` names the
masked-LM languages (`mlm=` for none: the ablation; the other streams keep their shares' ratio).

`setting=one_language` is the control: the pair task trained in German only (no POS, no French
pairs), masked LM in Arabic and Spanish as before; the same evaluation. Shared parameters then
serve one task, so Hyper-X should be on par with the static task adapters there.

Budget: 600 steps, most of them on the pair task. Recipe: `recipe=per_task` (one Adam state
per task for the shared parameters), `unit_projection=True` (the generators read p / ‖p‖, so a
generated adapter's step is bounded by the generator's; docs/method.md, section 3) and mean
pooling for the pair head (e5 was trained with mean pooling). Sizes: bottleneck 64, P 256.
With the paper's recipe (`:recipe=paper,pooling=cls,language_source=learned,
unit_projection=false`) masked LM supplied ~98 % of the shared generators' squared gradients
early on and Hyper-X's pair loss never left chance in 600 steps (seed 123); with this recipe it
left chance by step 125 (both at P 64). The tables (methods x seeds, the control, the paper
recipe, the ablations): README.md, made with
`python -m hyperx_jax.experiment` (see there).
"""

import os

from hyperx_jax import assets
from hyperx_jax.config import common, vocabulary

PAIR_LABELS = ["translation", "unrelated"]
TRAIN_PAIR_LANGUAGES = ("de", "fr")
SETTINGS = ("mixed", "one_language")
MLM_LANGUAGES = ("ar", "es")
EVAL_PAIR_LANGUAGES = ("de", "tr", "ar", "es")
SELECTION_LANGUAGE = "de"  # dev pairs that select the checkpoint
HELD_OUT_CHOICES = ("fr", "ja", "ru", "zh_CN")  # gettext pair data not used above


def pos_source(split: str) -> dict:
  return {
      "type": "conllu",
      "path": os.path.join(assets.asset_path("tr_pos"), f"{split}.conllu"),
      "tag_map": "google_universal_to_upos",
  }


def pairs_source(lang: str, split: str) -> dict:
  return {"type": "jsonl", "path": os.path.join(assets.asset_path("pairs"), lang, f"{split}.jsonl")}


def mlm_source(lang: str) -> dict:
  return {"type": "text", "path": os.path.join(assets.asset_path("mo"), f"{lang}.txt")}


def get_config(arg=None):
  arg = common.parse_arg(
      arg,
      method="hyperx",
      recipe="per_task",
      pooling="mean",
      setting="mixed",
      steps=600,
      batch=16,
      max_length=48,
      eval_examples=256,
      language_source="typology",
      unit_projection=True,
      held_out="",
      mlm="+".join(MLM_LANGUAGES),
  )
  if arg.setting not in SETTINGS:
    raise ValueError(f"configs/demo.py: setting={arg.setting!r}; expected one of {SETTINGS}")
  mixed = arg.setting == "mixed"
  pair_languages = TRAIN_PAIR_LANGUAGES if mixed else TRAIN_PAIR_LANGUAGES[:1]
  held_out = [lang for lang in arg.held_out.split("+") if lang]
  choices = [lang for lang in HELD_OUT_CHOICES if lang not in pair_languages]
  bad = [lang for lang in held_out if lang not in choices]
  if bad:
    raise ValueError(
        f"configs/demo.py: held_out={arg.held_out!r}: {bad} are not held-out pair "
        f"languages; choose from {choices}"
    )
  mlm_languages = [lang for lang in arg.mlm.split("+") if lang]
  bad = [lang for lang in mlm_languages if lang not in MLM_LANGUAGES]
  if bad:
    raise ValueError(
        f"configs/demo.py: mlm={arg.mlm!r}: {bad} have no masked-LM text here; "
        f"choose some of {list(MLM_LANGUAGES)} joined by + (or mlm= for none)"
    )
  c = common.get_config()
  common.set_method(c, arg.method)
  common.set_recipe(c, arg.recipe)
  c.model.checkpoint = assets.asset_path("e5-small")
  c.tokenizer = c.model.checkpoint
  common.set_offline_sizes(c)
  if mixed:
    c.tasks.pos = {
        "kind": "token_classification",
        "labels": list(common.UPOS_TAGS),
        "metric": "pos",
    }
  c.tasks.pairs = {
      "kind": "pair_classification",
      "labels": PAIR_LABELS,
      "metric": "accuracy",
      "pooling": arg.pooling,
  }
  c.tasks.mlm = dict(common.MLM_TASK)
  c.train_streams = (
      [common.stream("pos", "tr", pos_source("train"))] * mixed
      + [common.stream("pairs", lang, pairs_source(lang, "train")) for lang in pair_languages]
      + [common.stream("mlm", lang, mlm_source(lang)) for lang in mlm_languages]
  )
  c.eval_streams = (
      [common.stream("pos", "tr", pos_source("test"), arg.eval_examples, role="test")] * mixed
      + [
          common.stream("pairs", lang, pairs_source(lang, "test"), arg.eval_examples, role="test")
          for lang in EVAL_PAIR_LANGUAGES + tuple(held_out)
      ]
      + [
          common.stream(
              "pairs",
              SELECTION_LANGUAGE,
              pairs_source(SELECTION_LANGUAGE, "dev"),
              arg.eval_examples,
              role="dev",
          )
      ]
  )
  c.languages = common.languages_of(c.train_streams + c.eval_streams)
  c.hyperx.language_source = arg.language_source
  c.hyperx.unit_projection = arg.unit_projection
  trained = {s["lang"] for s in c.train_streams}
  if arg.language_source == vocabulary.LEARNED_SOURCE and set(c.languages) - trained:
    c.hyperx.untrained_language = "mean"
  # Fixed shares (POS 25 %, pairs 60 %, MLM 15 %): the temperature rate would give the big
  # gettext streams most of a short run, and the pair task is the slowest to learn.
  # The control gives the pair task the same 85 % (and MLM the same 15 %). Without masked-LM
  # streams the others keep their ratio (the sampler normalises the weights).
  mlm_weights = tuple(0.15 / len(mlm_languages) for _ in mlm_languages)
  c.data.weights = ((0.25, 0.3, 0.3) if mixed else (0.85,)) + mlm_weights
  c.data.max_length = arg.max_length
  c.data.batch_size = arg.batch
  c.data.eval_batch_size = 32
  c.model.hidden_dropout = c.model.attention_dropout = 0.0  # frozen pretrained encoder
  c.optim.lr = 1e-3
  # Heads 3e-3, adapters 1e-3, LayerNorms 1e-4: a 1e-2 pair-classification head overshoots.
  c.optim.lr_multipliers = (("^heads/", 3.0), ("^adapters/", 1.0), ("^encoder/", 0.1))
  c.optim.warmup_steps = arg.steps // 10
  c.total_steps = arg.steps
  c.log_every_steps = 25
  # The checkpoint reported is the best on German dev pairs (a trained pair, as XTREME selects
  # on English dev), evaluated with every checkpoint; test pairs only on that checkpoint.
  c.eval_every_steps = c.checkpoint.every_steps = max(1, arg.steps // 6)
  c.checkpoint.keep = 1
  c.checkpoint.best_metric = f"pairs:{SELECTION_LANGUAGE}/accuracy"
  return c
