"""A sweep's plan, computed once by the sweeper with Hydra's own config loader (the config each
job will get): which jobs (`jobs`), which of them train together as one stack (`stacks`), and
the manifest that tables read (`manifest`). Tables never compose configs again, so the key a
table looks for is the key the job wrote (one identity path).

    <results_dir>/runs/<experiment>/manifests/<profile>[-<tag>].json     all jobs of that table, merged
    <multirun dir>/manifest.json                                   the jobs this sweep launched
"""
from experiments.plan.jobs import (PlannedJob, expand_named, finished, plan_experiment, plan_jobs,
                                   reuse_finished, select)
from experiments.plan.manifest import (ABSENT, NOT_TABLE_KEYS, job_config, manifest, manifest_path,
                                       merge_manifest, override_value, read_manifest, replace_table_spec,
                                       table_tag, write_manifests)
from experiments.plan.stacks import launches, stack_groups, stack_signature, write_stack_file

__all__ = ["ABSENT", "NOT_TABLE_KEYS", "PlannedJob", "expand_named", "finished", "job_config",
           "launches", "manifest", "manifest_path", "merge_manifest", "override_value", "plan_experiment", "plan_jobs",
           "read_manifest", "replace_table_spec", "reuse_finished", "select", "stack_groups",
           "stack_signature", "table_tag", "write_manifests", "write_stack_file"]
