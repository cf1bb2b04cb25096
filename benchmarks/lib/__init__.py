"""What the benchmark scripts share: step timing (`speed`), allocator page faults (`page_faults`)
and the GPU suite (`suite`, `suite_training`, `suite_report`)."""
