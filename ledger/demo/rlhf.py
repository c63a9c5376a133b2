"""The demo's small but real RLHF loop in torch (CPU): used by ``ledger.demo`` and
``benchmarks/audit_overhead.py``.

The task is a toy assistant. A prompt is a (topic, phrasing group) pair; a response is a fixed
number of tokens from a 26-word vocabulary. People prefer responses that use the words relevant
to the topic, are polite, and avoid filler, rudeness and repetition (``true_utility``; hidden from
the learner, it plays the role of human judgement). The pipeline is the classic one:

1. a base policy (a GRU language model conditioned on the prompt) samples response pairs;
2. simulated annotators with different noise levels label which response they prefer
   (Bradley-Terry choice with an annotator-specific temperature, one of them careless);
3. a reward model (an MLP over the response's bag of tokens and the prompt) is trained on the
   preferences with the Bradley-Terry loss and DP-SGD (per-example clipping, Gaussian noise,
   Poisson sampling), so its privacy spend can be accounted;
4. the policy is optimised with RLOO (REINFORCE, leave-one-out baseline) against the reward
   model with a KL penalty to the frozen reference (base) policy;
5. evaluation against the reference and a bias examination across the two phrasing groups.

Every step reports to a recorder: the SDK's ``Run`` in the demo, ``NullRecorder`` when the
benchmark measures the loop without auditing. Everything is seeded, so the two are the same loop.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

TOPICS = ["weather", "recipe", "travel", "budget", "exercise", "sleep", "garden", "reading"]
GROUPS = ["formal", "casual"]  # how the prompt is phrased; the bias examination compares them
RELEVANT = {
    "weather": ["forecast", "rain"], "recipe": ["oven", "flour"], "travel": ["train", "map"],
    "budget": ["savings", "costs"], "exercise": ["stretch", "walk"], "sleep": ["bedtime", "dark"],
    "garden": ["soil", "seeds"], "reading": ["library", "chapter"],
}
POLITE, FILLER, RUDE, GENERIC = ["please", "thanks"], ["um", "uh"], ["whatever", "dunno"], ["ok", "sure", "maybe", "now"]
VOCAB = [w for t in TOPICS for w in RELEVANT[t]] + POLITE + FILLER + RUDE + GENERIC
V = len(VOCAB)
RESPONSE_LEN = 6
PROMPT_TEMPLATES = {"formal": "Could you kindly advise me about {t}?", "casual": "hey, {t} tips?"}
PROMPTS = [(ti, gi) for ti in range(len(TOPICS)) for gi in range(len(GROUPS))]


def prompt_text(topic: int, group: int) -> str:
    return PROMPT_TEMPLATES[GROUPS[group]].format(t=TOPICS[topic])


def response_text(tokens: list[int]) -> str:
    return " ".join(VOCAB[t] for t in tokens)


def true_utility(topic: int, tokens: list[int]) -> float:
    """The hidden human judgement the annotators (noisily) follow."""
    words = [VOCAB[t] for t in tokens]
    u = 1.0 * len(set(words) & set(RELEVANT[TOPICS[topic]]))
    u += 0.5 if any(w in POLITE for w in words) else 0.0
    u -= 0.5 * sum(w in FILLER for w in words) + 1.5 * sum(w in RUDE for w in words)
    u -= 0.3 * (len(words) - len(set(words)))
    return u


# --- models ----------------------------------------------------------------------------------


class Policy(nn.Module):
    """A GRU language model over the toy vocabulary, conditioned on the prompt's topic and group."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.tok = nn.Embedding(V + 1, hidden)  # index V = beginning of response
        self.topic = nn.Embedding(len(TOPICS), hidden)
        self.group = nn.Embedding(len(GROUPS), hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, V)

    def logits(self, topic: torch.Tensor, group: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position of ``tokens`` (teacher forcing): (B, T, V)."""
        bos = torch.full((tokens.shape[0], 1), V, dtype=torch.long)
        inp = torch.cat([bos, tokens[:, :-1]], dim=1)
        cond = (self.topic(topic) + self.group(group)).unsqueeze(1)
        out, _ = self.gru(self.tok(inp) + cond)
        return self.head(out)

    def logprob(self, topic: torch.Tensor, group: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Sum of per-token log-probabilities of each sequence: (B,)."""
        lp = torch.log_softmax(self.logits(topic, group, tokens), dim=-1)
        return lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, topic: torch.Tensor, group: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = topic.shape[0]
        cond = self.topic(topic) + self.group(group)
        h = None
        x = torch.full((b,), V, dtype=torch.long)
        out = []
        for _ in range(RESPONSE_LEN):
            o, h = self.gru((self.tok(x) + cond).unsqueeze(1), h)
            probs = torch.softmax(self.head(o[:, 0]), dim=-1)
            x = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            out.append(x)
        return torch.stack(out, dim=1)


class RewardModel(nn.Module):
    """An MLP over (bag of response tokens, prompt topic and group) -> a scalar reward."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(V + len(TOPICS) + len(GROUPS), hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).squeeze(-1)


def features(topic: torch.Tensor, group: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    counts = torch.zeros(tokens.shape[0], V).scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float))
    return torch.cat([counts, nn.functional.one_hot(topic, len(TOPICS)).float(),
                      nn.functional.one_hot(group, len(GROUPS)).float()], dim=1)


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- annotations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotator:
    person_id: str  # raw id: only ever recorded through a keyed pseudonym
    temperature: float  # Bradley-Terry choice temperature: larger = noisier
    careless: float = 0.0  # probability of a random label


ANNOTATORS = [Annotator("annotator-ada", 0.25), Annotator("annotator-bo", 0.5), Annotator("annotator-cy", 1.0),
              Annotator("annotator-di", 2.0), Annotator("annotator-ed", 0.5, careless=0.3)]
GUIDELINE_VERSION = "preference-guidelines/v1.2"


@dataclass
class Pair:
    topic: int
    group: int
    a: list[int]
    b: list[int]
    chosen_a: bool
    annotator: int
    batch: int


def annotate(base: Policy, n_pairs: int, batch_size: int, seed: int) -> list[Pair]:
    """Sample response pairs from the base policy; simulated annotators label them."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    idx = torch.randint(len(PROMPTS), (n_pairs,), generator=gen)
    topic = torch.tensor([PROMPTS[i][0] for i in idx])
    group = torch.tensor([PROMPTS[i][1] for i in idx])
    ra, rb = base.sample(topic, group, gen), base.sample(topic, group, gen)
    pairs = []
    for i in range(n_pairs):
        batch = i // batch_size
        # each batch is labelled by two or three of the annotators, round robin
        crew = [(batch + k) % len(ANNOTATORS) for k in range(2 + batch % 2)]
        who = crew[rng.randrange(len(crew))]
        ann = ANNOTATORS[who]
        t, a, b = int(topic[i]), ra[i].tolist(), rb[i].tolist()
        if rng.random() < ann.careless:
            chosen_a = rng.random() < 0.5
        else:
            d = (true_utility(t, a) - true_utility(t, b)) / ann.temperature
            chosen_a = rng.random() < 1.0 / (1.0 + math.exp(-d))
        pairs.append(Pair(t, int(group[i]), a, b, chosen_a, who, batch))
    return pairs


def pair_tensors(pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen features, rejected features) for the Bradley-Terry loss."""
    t = torch.tensor([p.topic for p in pairs])
    g = torch.tensor([p.group for p in pairs])
    a = torch.tensor([p.a for p in pairs])
    b = torch.tensor([p.b for p in pairs])
    ch = torch.tensor([p.chosen_a for p in pairs]).unsqueeze(1)
    fa, fb = features(t, g, a), features(t, g, b)
    return torch.where(ch, fa, fb), torch.where(ch, fb, fa)


# --- recording -------------------------------------------------------------------------------


class Recorder(Protocol):
    def reward_model_update(self, step: int, loss: float, **kw: Any) -> Any: ...
    def policy_update(self, step: int, loss: float, kl: float | None, reward_mean: float | None,
                      reward_std: float | None, grad_norm: float | None, **kw: Any) -> Any: ...
    def privacy_spend(self, noise_multiplier: float, sample_rate: float, steps: int) -> Any: ...
    def checkpoint(self, step: int, model: Any, path: Any = None) -> Any: ...
    def annotation_batch(self, **kw: Any) -> Any: ...


class NullRecorder:
    """The same calls with nothing recorded (the benchmark's baseline)."""

    def annotation_batch(self, **kw: Any) -> None: ...
    def reward_model_update(self, *a: Any, **kw: Any) -> None: ...
    def policy_update(self, *a: Any, **kw: Any) -> None: ...
    def privacy_spend(self, *a: Any, **kw: Any) -> None: ...
    def checkpoint(self, *a: Any, **kw: Any) -> None: ...


def record_annotations(rec: Recorder, pairs: list[Pair], batch_size: int) -> None:
    """One annotation.batch per batch: who labelled it (pseudonymised by the recorder), the guideline
    version, and the prompts and response pairs (committed, never in clear in the log)."""
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b:b + batch_size]
        rec.annotation_batch(
            batch_id=f"batch-{batch[0].batch:03d}", dataset_id="demo-preferences", guideline_version=GUIDELINE_VERSION,
            annotators=sorted({ANNOTATORS[p.annotator].person_id for p in batch}),
            prompts=[prompt_text(p.topic, p.group) for p in batch],
            responses=[[response_text(p.a), response_text(p.b)] for p in batch],
            labels=["a" if p.chosen_a else "b" for p in batch])


# --- training --------------------------------------------------------------------------------


@dataclass
class Config:
    seed: int = 7
    n_pairs: int = 8192
    heldout_fraction: float = 0.1
    annotation_batch: int = 128
    rm_steps: int = 800
    rm_expected_batch: int = 128
    rm_lr: float = 3e-3
    dp_clip: float = 1.0
    dp_noise_multiplier: float = 1.1
    dp_delta: float = 1e-5
    privacy_spend_every: int = 50
    policy_steps: int = 400
    prompts_per_step: int = 32
    samples_per_prompt: int = 8
    policy_lr: float = 2e-3
    kl_beta: float = 0.3
    checkpoint_every: int = 50
    log_every: int = 5

    @classmethod
    def small(cls) -> Config:
        return cls(n_pairs=768, rm_steps=60, rm_expected_batch=64, policy_steps=40, prompts_per_step=16,
                   samples_per_prompt=4, policy_lr=3e-3, checkpoint_every=20, privacy_spend_every=20)

    @property
    def n_train(self) -> int:
        return self.n_pairs - int(self.n_pairs * self.heldout_fraction)

    @property
    def sample_rate(self) -> float:
        """Poisson sampling rate over the training pairs (the DP accounting's q)."""
        return self.rm_expected_batch / self.n_train

    def split(self, pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
        return pairs[:self.n_train], pairs[self.n_train:]

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "reward_model": {"loss": "bradley-terry", "optimizer": "adam", "lr": self.rm_lr, "steps": self.rm_steps,
                             "expected_batch_size": self.rm_expected_batch, "sampling": "poisson",
                             "dp_sgd": {"clip_norm": self.dp_clip, "noise_multiplier": self.dp_noise_multiplier,
                                        "sample_rate": self.sample_rate, "privacy_unit": "one preference pair"}},
            "policy": {"algorithm": "rloo", "optimizer": "adam", "lr": self.policy_lr, "steps": self.policy_steps,
                       "prompts_per_step": self.prompts_per_step, "samples_per_prompt": self.samples_per_prompt,
                       "kl_beta": self.kl_beta, "kl_estimator": "sequence log-ratio", "response_tokens": RESPONSE_LEN},
            "seed": self.seed,
        }


def train_reward_model(rm: RewardModel, pairs: list[Pair], cfg: Config, rec: Recorder, counters: dict[str, int]) -> dict:
    """Bradley-Terry loss with DP-SGD: Poisson-sampled batches, per-example gradients clipped to
    ``dp_clip``, Gaussian noise of std ``dp_noise_multiplier * dp_clip`` on the sum."""
    if len(pairs) != cfg.n_train:
        raise ValueError(f"expected {cfg.n_train} training pairs (the sample rate is accounted over them), got {len(pairs)}")
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    chosen, rejected = pair_tensors(pairs)
    opt = torch.optim.Adam(rm.parameters(), lr=cfg.rm_lr)
    params = {k: v.detach() for k, v in rm.named_parameters()}

    def loss_one(p: dict, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        diff = functional_call(rm, p, (c.unsqueeze(0),)) - functional_call(rm, p, (r.unsqueeze(0),))
        return -nn.functional.logsigmoid(diff).sum()

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    q, pending, loss = cfg.sample_rate, 0, float("nan")
    for step in range(1, cfg.rm_steps + 1):
        mask = torch.rand(len(pairs), generator=gen) < q
        idx = mask.nonzero().squeeze(1)
        params = {k: v.detach() for k, v in rm.named_parameters()}
        if len(idx):
            g = per_example(params, chosen[idx], rejected[idx])
            norms = torch.sqrt(sum(x.reshape(len(idx), -1).pow(2).sum(1) for x in g.values()))
            scale = (cfg.dp_clip / (norms + 1e-12)).clamp(max=1.0)
            summed = {k: (x * scale.view(-1, *[1] * (x.dim() - 1))).sum(0) for k, x in g.items()}
        else:
            summed = {k: torch.zeros_like(v) for k, v in params.items()}
        opt.zero_grad()
        sq = 0.0
        for k, p in rm.named_parameters():
            noise = torch.normal(0.0, cfg.dp_noise_multiplier * cfg.dp_clip, p.shape, generator=gen)
            p.grad = (summed[k] + noise) / cfg.rm_expected_batch
            sq += float(p.grad.pow(2).sum())
        opt.step()
        pending += 1
        counters["rm_pair_examples"] = counters.get("rm_pair_examples", 0) + int(len(idx))
        if step % cfg.log_every == 0 or step == cfg.rm_steps:
            with torch.no_grad():
                dc, dr = rm(chosen), rm(rejected)
                loss = float(-nn.functional.logsigmoid(dc - dr).mean())
                acc = float((dc > dr).float().mean())
            rec.reward_model_update(step, loss, accuracy=acc, grad_norm=math.sqrt(sq), batch_size=int(len(idx)), dp_steps=step,
                                    dp_clip_fraction=float((norms > cfg.dp_clip).float().mean()) if len(idx) else 0.0)
        if pending == cfg.privacy_spend_every or step == cfg.rm_steps:
            rec.privacy_spend(cfg.dp_noise_multiplier, q, pending)
            pending = 0
    return {"final_loss": loss}


def _prompt_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randint(len(PROMPTS), (n,), generator=gen)
    return torch.tensor([PROMPTS[i][0] for i in idx]), torch.tensor([PROMPTS[i][1] for i in idx])


def train_policy(policy: Policy, ref: Policy, rm: RewardModel, cfg: Config, rec: Recorder, counters: dict[str, int],
                 checkpoint_dir: Any = None) -> dict:
    """RLOO against the reward model with a KL penalty to the frozen reference policy."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(cfg.seed + 2)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.policy_lr)
    k = cfg.samples_per_prompt
    stats: dict[str, float] = {}
    for step in range(1, cfg.policy_steps + 1):
        topic, group = _prompt_batch(cfg.prompts_per_step, gen)
        topic, group = topic.repeat_interleave(k), group.repeat_interleave(k)
        tokens = policy.sample(topic, group, gen)
        logp = policy.logprob(topic, group, tokens)
        with torch.no_grad():
            ref_logp = ref.logprob(topic, group, tokens)
            reward = rm(features(topic, group, tokens))
            kl = logp.detach() - ref_logp
            shaped = (reward - cfg.kl_beta * kl).view(-1, k)
            baseline = (shaped.sum(1, keepdim=True) - shaped) / (k - 1)  # leave-one-out
            adv = (shaped - baseline).view(-1)
        loss = -(adv * logp).mean()
        opt.zero_grad()
        loss.backward()
        gnorm = float(nn.utils.clip_grad_norm_(policy.parameters(), 1.0))
        opt.step()
        counters["policy_tokens"] = counters.get("policy_tokens", 0) + int(tokens.numel())
        if step % cfg.log_every == 0 or step == cfg.policy_steps:
            util = sum(true_utility(int(t), s) for t, s in zip(topic, tokens.tolist(), strict=True)) / len(topic)
            stats = {"loss": float(loss.detach()), "kl": float(kl.mean()), "reward_mean": float(reward.mean()),
                     "reward_std": float(reward.std())}
            rec.policy_update(step, stats["loss"], stats["kl"], stats["reward_mean"], stats["reward_std"], gnorm,
                              model=policy, true_utility_mean=util)
        if step % cfg.checkpoint_every == 0 or step == cfg.policy_steps:
            path = None
            if checkpoint_dir is not None:
                path = checkpoint_dir / f"policy-step-{step:05d}.safetensors"
                save_file({n: p.detach().contiguous() for n, p in policy.state_dict().items()}, str(path))
            rec.checkpoint(step, policy, path=path)
    return stats


# --- evaluation and bias ---------------------------------------------------------------------


@torch.no_grad()
def evaluate(policy: Policy, ref: Policy, rm: RewardModel, heldout: list[Pair], seed: int, per_prompt: int = 64) -> dict:
    gen = torch.Generator().manual_seed(seed)
    topic = torch.tensor([p[0] for p in PROMPTS]).repeat_interleave(per_prompt)
    group = torch.tensor([p[1] for p in PROMPTS]).repeat_interleave(per_prompt)
    pol, base = policy.sample(topic, group, gen), ref.sample(topic, group, gen)
    up = torch.tensor([true_utility(int(t), s) for t, s in zip(topic, pol.tolist(), strict=True)])
    ub = torch.tensor([true_utility(int(t), s) for t, s in zip(topic, base.tolist(), strict=True)])
    c, r = pair_tensors(heldout)
    truth = [true_utility(p.topic, p.a) > true_utility(p.topic, p.b) for p in heldout]
    pred_a = [bool(x) for x in ((rm(c) > rm(r)) == torch.tensor([p.chosen_a for p in heldout]))]
    return {
        "policy_true_utility": round(float(up.mean()), 4), "reference_true_utility": round(float(ub.mean()), 4),
        "win_rate_vs_reference": round(float((up > ub).float().mean() + 0.5 * (up == ub).float().mean()), 4),
        "kl_to_reference": round(float((policy.logprob(topic, group, pol) - ref.logprob(topic, group, pol)).mean()), 4),
        "rm_heldout_accuracy_vs_labels": round(float((rm(c) > rm(r)).float().mean()), 4),
        "rm_heldout_accuracy_vs_truth": round(sum(a == t for a, t in zip(pred_a, truth, strict=True)) / len(heldout), 4),
        "samples": int(len(topic)), "heldout_pairs": len(heldout),
    }


@torch.no_grad()
def bias_examination(policy: Policy, rm: RewardModel, pairs: list[Pair], seed: int, tolerance: float = 0.25,
                     per_prompt: int = 64) -> tuple[dict, str]:
    """Does quality depend on how the prompt was phrased (formal vs casual)? And do annotators disagree
    with the (hidden) true preference at very different rates?"""
    gen = torch.Generator().manual_seed(seed)
    metrics: dict[str, float] = {}
    for gi, g in enumerate(GROUPS):
        topic = torch.arange(len(TOPICS)).repeat_interleave(per_prompt)
        group = torch.full_like(topic, gi)
        toks = policy.sample(topic, group, gen)
        metrics[f"true_utility_{g}"] = round(sum(true_utility(int(t), s) for t, s in zip(topic, toks.tolist(), strict=True)) / len(topic), 4)
    # the reward model's score for the very same responses when only the phrasing group is swapped
    t = torch.tensor([p.topic for p in pairs])
    a = torch.tensor([p.a for p in pairs])
    f0, f1 = features(t, torch.zeros_like(t), a), features(t, torch.ones_like(t), a)
    metrics["rm_score_gap_same_response"] = round(float((rm(f0) - rm(f1)).abs().mean()), 4)
    utility_gap = abs(metrics[f"true_utility_{GROUPS[0]}"] - metrics[f"true_utility_{GROUPS[1]}"])
    metrics["true_utility_gap"] = round(utility_gap, 4)
    disagreement = []
    for i in range(len(ANNOTATORS)):
        mine = [p for p in pairs if p.annotator == i]
        if mine:
            wrong = sum((true_utility(p.topic, p.a) > true_utility(p.topic, p.b)) != p.chosen_a for p in mine)
            disagreement.append(wrong / len(mine))
    metrics["annotator_disagreement_min"] = round(min(disagreement), 4)
    metrics["annotator_disagreement_max"] = round(max(disagreement), 4)
    metrics["tolerance"] = tolerance
    verdict = "within" if utility_gap <= tolerance and metrics["rm_score_gap_same_response"] <= tolerance else "OUTSIDE"
    findings = (f"Quality gap between {GROUPS[0]} and {GROUPS[1]} prompts: {utility_gap:.3f} true-utility points; reward "
                f"score shift when only the phrasing changes: {metrics['rm_score_gap_same_response']:.3f}; both {verdict} "
                f"the tolerance {tolerance}. Annotator disagreement with the reference preference ranges "
                f"{min(disagreement):.2f}-{max(disagreement):.2f}: the noisiest annotators' labels deserve review.")
    return metrics, findings


def flops_estimate(models: Models, counters: dict[str, int]) -> int:
    """Training FLOPs by the usual 6 x parameters x tokens rule (forward 2, backward 4), plus the
    reference policy's forward pass (2 x parameters x tokens); reward-model examples are pairs."""
    p_pol, p_rm = param_count(models.policy), param_count(models.rm)
    tokens = counters.get("policy_tokens", 0)
    return 6 * p_pol * tokens + 2 * p_pol * tokens + 6 * p_rm * 2 * counters.get("rm_pair_examples", 0)


@dataclass
class Models:
    base: Policy
    policy: Policy
    ref: Policy
    rm: RewardModel
    extra: dict = field(default_factory=dict)


def build_models(cfg: Config) -> Models:
    """Seeded base policy (also the frozen reference), a trainable copy, and a fresh reward model."""
    torch.manual_seed(cfg.seed)
    base = Policy()
    policy, ref = Policy(), Policy()
    policy.load_state_dict(base.state_dict())
    ref.load_state_dict(base.state_dict())
    for p in ref.parameters():
        p.requires_grad_(False)
    return Models(base, policy, ref, RewardModel())
