"""The video-QA model: V-JEPA 2 tokens -> projector -> visual tokens placed next to the question's
tokens in a causal language model (arXiv 2506.09985, video question answering).

::

    encoder tokens (B, N, D_enc) --VisualProjector--> (B, Q, D_lm)      (Q learned queries, or Q = N)
    LM input  = [visual tokens | question tokens | answer tokens | eos]   (right-padded; or the
    LM labels = [   ignored    |     ignored     | answer tokens | eos]    question first, then visual)

The encoder is frozen (its tokens cached) or trained with the rest (:class:`EncoderQA`).

The language model is any ``transformers`` causal LM: loaded from a local folder
(:func:`load_lm`, ``AutoModelForCausalLM`` + ``AutoTokenizer``), or a small Llama-style model built
from scratch with a word-level tokenizer over the training text (:func:`scratch_lm`; the toy
benchmark's). ``transformers`` is imported only here (``pip install "vjepa2[vqa]"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from vjepa2.config import ConfigError
from vjepa2.layers.cross_attention import CrossBlock

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
IGNORE = -100  # label of a position that is not scored


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("video QA needs the transformers package: pip install 'vjepa2[vqa]' "
                          "(or pip install transformers)") from None
    return transformers


class VisualProjector(nn.Module):
    """``(B, N, enc_dim)`` encoder tokens -> ``(B, Q, lm_dim)`` visual tokens of the LM.

    ``num_queries`` > 0: attentive pooling (learned queries, one cross-attention block) to that many
    tokens; 0: every token kept (``Q = N``). Then a 2-layer MLP to the LM's width, as LLaVA-style
    projectors do.
    """

    def __init__(self, enc_dim: int, lm_dim: int, num_queries: int = 16, heads: int = 4) -> None:
        super().__init__()
        if enc_dim % heads:
            raise ConfigError(f"projector.heads={heads} does not divide the encoder width {enc_dim}")
        self.num_queries = num_queries
        if num_queries:
            self.queries = nn.Parameter(torch.randn(1, num_queries, enc_dim) * 0.02)
            self.pool = CrossBlock(enc_dim, heads, 4 * enc_dim)
        self.norm = nn.LayerNorm(enc_dim)
        self.mlp = nn.Sequential(nn.Linear(enc_dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.num_queries:
            tokens = self.pool(self.queries.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens)
        return self.mlp(self.norm(tokens))


def words_of(text: str) -> list[str]:
    """The word-level tokenizer's split: lower-case words and punctuation marks."""
    return re.findall(r"[\w'-]+|[^\w\s]", text.lower())


def word_tokenizer(vocabulary: list[str]):
    """A ``transformers`` fast tokenizer over ``vocabulary`` (words, no special tokens), built offline."""
    require_transformers()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(vocabulary))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def text_vocabulary(texts) -> list[str]:
    """Sorted words of ``texts`` (lower case; what :func:`word_tokenizer` needs)."""
    return sorted({w for text in texts for w in words_of(text)})


@dataclass(frozen=True)
class ScratchLM:
    """Size of a Llama-style LM trained from scratch: width, blocks, heads."""

    dim: int = 128
    depth: int = 2
    heads: int = 4


def scratch_lm(tokenizer, size: ScratchLM, seed: int) -> nn.Module:
    """A seeded random Llama-style causal LM sized ``size`` over ``tokenizer``'s vocabulary."""
    transformers = require_transformers()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=size.dim, intermediate_size=4 * size.dim,
        num_hidden_layers=size.depth, num_attention_heads=size.heads, num_key_value_heads=size.heads,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.LlamaForCausalLM(config)


def load_lm(folder: str) -> tuple[nn.Module, object]:
    """``(model, tokenizer)`` of a local ``transformers`` causal-LM folder (nothing is downloaded)."""
    from pathlib import Path

    if not Path(folder).is_dir():
        raise ConfigError(f"lm.path: {folder} is not a folder (a local transformers causal LM: config.json, "
                          f"weights, tokenizer files)")
    transformers = require_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"lm.path: cannot load a causal LM and its tokenizer from {folder}: "
                          f"{str(err).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class VideoQA(nn.Module):
    """Projector + causal LM; ``forward`` = the answer's loss, :meth:`answer` = greedy answers.

    ``projector`` None: a blind LM (the question alone; a baseline). ``visual_first``: the visual
    tokens come before the question (LLaVA's order, the default) or right after it, where the
    causal LM reads them in the question's context."""

    def __init__(self, projector: VisualProjector | None, lm: nn.Module, tokenizer, visual_first: bool = True) -> None:
        super().__init__()
        self.projector, self.lm, self.tokenizer, self.visual_first = projector, lm, tokenizer, visual_first

    def _visual(self, tokens: torch.Tensor | None, batch: int) -> torch.Tensor:
        embed = self.lm.get_input_embeddings()
        if self.projector is None or tokens is None:
            return embed.weight.new_zeros(batch, 0, embed.embedding_dim)
        return self.projector(tokens.to(embed.weight.dtype)).to(embed.weight.dtype)

    def _prompt_ids(self, question: str) -> list[int]:
        return self.tokenizer(question, add_special_tokens=True)["input_ids"]

    def _answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def _sequence(self, visual: torch.Tensor, prompt: list[int], answer: list[int] = ()
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample's ``(L, dim)`` input embeddings and ``(L,)`` labels (the answer's ids, else
        :data:`IGNORE`): the visual tokens ``(Q, dim)`` and the prompt in this model's order, then the answer."""
        text = self.lm.get_input_embeddings()(torch.tensor(list(prompt) + list(answer), device=visual.device))
        question, reply = text[:len(prompt)].to(visual.dtype), text[len(prompt):].to(visual.dtype)
        parts = [visual, question] if self.visual_first else [question, visual]
        labels = [IGNORE] * (len(visual) + len(prompt)) + list(answer)
        return torch.cat(parts + [reply]), torch.tensor(labels, device=visual.device)

    def forward(self, tokens: torch.Tensor | None, questions: list[str], answers: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over the answers' tokens (and eos) -> ``(loss, loss[None])`` (what
        :func:`vjepa2.engine.loop.optimizer_step` expects). ``tokens``: ``(B, N, enc_dim)``;
        sequences are right-padded."""
        visual = self._visual(tokens, len(questions))
        rows = [self._sequence(visual[i], self._prompt_ids(q), self._answer_ids(a))
                for i, (q, a) in enumerate(zip(questions, answers, strict=True))]
        embeds, mask, pads = _pad([e for e, _ in rows], left=False)
        labels = torch.stack([torch.cat([lab, lab.new_full((n,), IGNORE)]) for (_, lab), n in zip(rows, pads)])
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        return out.loss, out.loss.detach()[None]

    @torch.no_grad()
    def answer(self, tokens: torch.Tensor | None, questions: list[str], max_new_tokens: int = 8) -> list[str]:
        """Greedy answers (prompts left-padded, positions counted from each one's first token)."""
        visual = self._visual(tokens, len(questions))
        embed = self.lm.get_input_embeddings()
        embeds, mask, _ = _pad([self._sequence(visual[i], self._prompt_ids(q))[0] for i, q in enumerate(questions)],
                               left=True)
        eos = self.tokenizer.eos_token_id
        out_ids = torch.zeros(len(questions), 0, dtype=torch.long, device=embeds.device)
        done = torch.zeros(len(questions), dtype=torch.bool, device=embeds.device)
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1]
            token = torch.where(done, torch.full_like(done, eos, dtype=torch.long), logits.argmax(-1))
            out_ids = torch.cat([out_ids, token[:, None]], dim=1)
            done |= token == eos
            if bool(done.all()):
                break
            embeds = torch.cat([embeds, embed(token)[:, None].to(embeds.dtype)], dim=1)
            mask = torch.cat([mask, mask.new_ones(len(questions), 1)], dim=1)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out_ids.tolist()]


class EncoderQA(nn.Module):
    """An encoder trained with its :class:`VideoQA` (the unfrozen stage): ``forward(clips, questions,
    answers)`` with ``clips`` ``(B, S, 3, T, H, W)`` (S segments per video) -> the encoder's tokens
    ``(B, S * N, D)`` -> the answers' loss, as :meth:`VideoQA.forward`."""

    def __init__(self, encoder: nn.Module, qa: VideoQA) -> None:
        super().__init__()
        self.encoder, self.qa = encoder, qa

    def forward(self, clips: torch.Tensor, questions: list[str], answers: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        B, S = clips.shape[:2]
        tokens = self.encoder(clips.flatten(0, 1))                                    # (B * S, N, D)
        return self.qa(tokens.reshape(B, S * tokens.shape[1], tokens.shape[2]), questions, answers)


def _pad(rows: list[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(L_i, dim)`` rows -> ``(B, L, dim)`` zero-padded on the ``left`` or right, the ``(B, L)``
    attention mask (1 = token), and each row's padding length."""
    length = max(len(r) for r in rows)
    pads = [length - len(r) for r in rows]
    out, mask = [], []
    for row, n in zip(rows, pads):
        fill, ones = row.new_zeros(n, row.shape[1]), torch.ones(len(row), dtype=torch.long, device=row.device)
        zeros = torch.zeros(n, dtype=torch.long, device=row.device)
        out.append(torch.cat([fill, row] if left else [row, fill]))
        mask.append(torch.cat([zeros, ones] if left else [ones, zeros]))
    return torch.stack(out), torch.stack(mask), pads
