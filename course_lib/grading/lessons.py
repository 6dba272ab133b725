"""The graded exercises: checks module (shipped), hidden cases (grader only), implementations to flag."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

# exercise -> (checks module, hidden-cases module)
LESSONS = {
    "01_padding": ("course_lib.checks.padding", "course_lib.grading.hidden.padding"),
    "02_kv_cache_and_fragmentation": ("course_lib.checks.kv_cache", "course_lib.grading.hidden.kv_cache"),
    "03_continuous_batching": ("course_lib.checks.batching", "course_lib.grading.hidden.batching"),
    "04_paged_attention": ("course_lib.checks.paging", "course_lib.grading.hidden.paging"),
    "05_prefix_caching": ("course_lib.checks.prefix", "course_lib.grading.hidden.prefix"),
    "06_scheduling_and_disaggregation": ("course_lib.checks.scheduling", "course_lib.grading.hidden.scheduling"),
    "07_capstone_incident": ("course_lib.checks.incidents", "course_lib.grading.hidden.incidents"),
}

# task -> course_lib's own implementation of it (calling one is flagged, not blocked)
IMPLEMENTATIONS = {
    "pad_sequences": ["course_lib.padding:pad_tokens", "course_lib.padding:pad_batch"],
    "attention_mask": ["course_lib.padding:attention_mask_from_lengths"],
    "position_ids": ["course_lib.padding:position_ids_from_mask"],
    "padding_waste": ["course_lib.padding:padding_stats", "course_lib.padding:total_waste"],
    "bucket_batches": ["course_lib.padding:bucket_by_length"],
    "kv_bytes_per_token": ["course_lib.kv.sizing:shape_from_config", "course_lib.kv.sizing:kv_bytes_per_token"],
    "first_fit": ["course_lib.kv.allocators:first_fit"],
    "free_slab": ["course_lib.kv.allocators:insert_hole"],
    "waste_split": ["course_lib.kv.contiguous:split_usage"],
    "schedule_step": ["course_lib.engine.scheduler:ChunkedPrefill", "course_lib.checks.batching:reference_schedule_step"],
    "ttft_tpot": ["course_lib.engine.metrics:ttft_tpot"],
    "slot_for_position": ["course_lib.kv.paged:slot_of"],
    "paged_attention": ["course_lib.paged_attention:paged_attention_gather", "course_lib.paged_attention:paged_attention",
                        "course_lib.paged_attention:paged_attention_kernel"],
    "chain_hashes": ["course_lib.kv.prefix_cache:prefix_block_hashes"],
    "aged_priority": ["course_lib.engine.queues:Ageing"],
    "slo_met": ["course_lib.engine.slo:meets", "course_lib.engine.slo:slo_report"],
    "handover_bytes": ["course_lib.engine.disagg:handover_bytes", "course_lib.kv.sizing:shape_from_config"],
}


@dataclass
class Lesson:
    name: str
    checks: object          # the shipped module: TASKS, check_<task>
    hidden: object          # the grader's module: cases(rng)

    @property
    def tasks(self):
        return self.checks.TASKS


def lesson(name: str) -> Lesson:
    checks, hidden = LESSONS[name]
    return Lesson(name, importlib.import_module(checks), importlib.import_module(hidden))


def lesson_for(stem: str) -> str | None:
    """The exercise a file name is for: '01_padding-alice' -> '01_padding' (the longest that starts it)."""
    hits = [n for n in LESSONS if stem == n or stem.startswith(n)]
    return max(hits, key=len) if hits else None
