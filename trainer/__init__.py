"""Adapting shopfusion's models across product domains (categories, retailers) with few or no labels.

Modules, one concept each:

- `domains`: grouping examples into domains, k-shot splits, input validation;
- `datasets`: loaders for catalogs, intents, judgments and label-free pseudo-queries;
- `losses`: L2-SP, gradient reversal / DANN, MMD, `L_CE + lambda * L_DA`, contrastive and MarginMSE;
- `heads`, `models`: a shared encoder with one classification head per domain;
- `intent_trainer`: intent / category transfer (`head`, `finetune`, `l2sp`, `dann`, `mmd`) in named phases;
- `mining`: a small BM25 and hard-negative mining;
- `encoder_trainer`: dual-encoder contrastive fine-tuning, pseudo-query adaptation, distillation;
- `evaluators`: classification and retrieval metrics with a named primary metric;
- `artifacts`: safetensors-only saving and loading, model cards, checkpoints;
- `cli`: the `train` click group (mounted as `shopfusion train`).

Heavy dependencies (torch, sentence-transformers) load when a module that needs them is imported, never
from this package's `__init__`.
"""
