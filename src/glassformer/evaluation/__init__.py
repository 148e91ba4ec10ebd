"""Evaluation: verifiable instruction following (`ifeval_lite`), log-likelihood scoring of
held-out text and multiple-choice tasks (`loglik`), and an lm-eval-harness model adapter
(`lm_eval_adapter`)."""
