-- raw_task_runs_payload_v1: the payload of each inserted run, written once per run.
CREATE TABLE IF NOT EXISTS {database}.raw_task_runs_payload_v1
(
    run_id      String,
    created_at  DateTime64(3),
    payload     JSON(max_dynamic_paths = 1024)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (run_id)
SETTINGS index_granularity = 8192, enable_json_type = 1;
