"""Preference losses: learn from pairs (x, y_w, y_l) where answer y_w is preferred to y_l.

Every loss here takes, per pair, the summed log-probability of each answer's tokens under the
policy being trained,

    log pi(y | x) = sum_t log pi(y_t | x, y_<t)          (`chosen_logps`, `rejected_logps`)

the answers' token counts |y| (`chosen_len`, `rejected_len`) and, for the losses anchored to a
frozen reference model pi_ref, the same sums under pi_ref. Each returns the per-pair losses
(the trainer sums them and divides by the number of pairs) and the per-pair implicit rewards
of the two answers, whose difference is the reward margin the training curves show.

    DPO    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
           Secretly a Reward Model"
    IPO    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
           Human Preferences"
    SimPO  Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free
           Reward"
    ORPO   Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference
           Model"

The conventions (IPO's length normalisation, ORPO's per-token averages) follow TRL's
DPOTrainer, CPOTrainer and ORPOTrainer, which the tests compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "REFERENCE_FREE", "dpo_loss", "ipo_loss", "orpo_loss", "simpo_loss"]

Losses = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (per-pair loss, r_w, r_l)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> Losses:
    """DPO (Rafailov et al. 2023, eq. 7): the Bradley-Terry likelihood of the preference under
    the implicit reward r(x, y) = beta log(pi(y|x) / pi_ref(y|x)),

        L = -log sigmoid(r(x, y_w) - r(x, y_l))

    beta is the strength of the KL anchor to pi_ref (smaller: the policy may move further)."""
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_len: torch.Tensor,
    rejected_len: torch.Tensor,
    beta: float = 0.1,
) -> Losses:
    """IPO (Azar et al. 2023, eq. 17): regress the log-ratio margin onto a fixed target instead
    of pushing it to infinity, so the policy stays regularised even on deterministic
    preferences. With h = log-ratio per answer token (pi / pi_ref, averaged over |y|, the form
    the paper's experiments used),

        L = (h(x, y_w) - h(x, y_l) - 1 / (2 beta))^2

    beta here is the paper's tau."""
    chosen_ratio = (chosen_logps - ref_chosen_logps) / chosen_len.clamp(min=1)
    rejected_ratio = (rejected_logps - ref_rejected_logps) / rejected_len.clamp(min=1)
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_len: torch.Tensor,
    rejected_len: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
) -> Losses:
    """SimPO (Meng et al. 2024, eq. 6): no reference model; the reward is the policy's own
    length-normalised log-likelihood, which is what generation ranks answers by, and the
    winner must beat the loser by a target margin gamma,

        r(x, y) = beta / |y| log pi(y|x),     L = -log sigmoid(r(x, y_w) - r(x, y_l) - gamma)"""
    chosen_rewards = beta * chosen_logps / chosen_len.clamp(min=1)
    rejected_rewards = beta * rejected_logps / rejected_len.clamp(min=1)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_len: torch.Tensor,
    rejected_len: torch.Tensor,
    beta: float = 0.1,
) -> Losses:
    """ORPO (Hong et al. 2024, eqs. 6-7): supervised fine-tuning on the winner plus a penalty
    on the odds ratio, in one stage and with no reference model. With the per-token average
    log-likelihood P(y|x) = exp(1/|y| log pi(y|x)) and odds(y|x) = P / (1 - P),

        L = -1/|y_w| log pi(y_w|x) - beta log sigmoid(log odds(y_w|x) - log odds(y_l|x))

    (log(1 - P) is computed as log(-expm1(log P)) so it stays finite as P -> 0)."""
    chosen_avg = chosen_logps.float() / chosen_len.clamp(min=1)
    rejected_avg = rejected_logps.float() / rejected_len.clamp(min=1)
    log_odds = (chosen_avg - rejected_avg) - (
        torch.log(-torch.expm1(chosen_avg)) - torch.log(-torch.expm1(rejected_avg))
    )
    losses = -chosen_avg - beta * F.logsigmoid(log_odds)
    return losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach()


# name -> default beta (the scale of the implicit reward)
LOSSES = {"dpo": 0.1, "ipo": 0.1, "simpo": 2.0, "orpo": 0.1}
REFERENCE_FREE = frozenset({"simpo", "orpo"})
