"""The project's test harness, outside the installed package: the benchmark (`make bench`: training speed, HTTP
serving against the frameworks' ceilings, cold start of the recommend function, scale to 100k products,
merchandising, logins, search; one table, written as JSON and Markdown), the Spark comparison (`make bench-spark`),
the soak test (`make soak`), the API fuzzer (`make fuzz`) and the S3 fault proxy of the tests.

Run from the repository root as `python -m bench <part>` (see `__main__`). One module per benchmark part (train,
serve, cold, scale, merch, logins, search, spark), plus what they share: `options` (what a run measures and where
the Online Retail data lives: BENCH_DATA_DIR), `common` (statistics, memory, the machine, child processes),
`deployment` (the trained Online Retail model the serving parts use), `report` (the table and its files), `ceiling`
(the bare Starlette and FastAPI apps serving is compared with), `in_process` (apps called as ASGI, without sockets,
and a request's profile) and `runner` (the order of the parts; it imports the parts, never the reverse).

Every figure that can be repeated is the median of repeated runs, and every ratio compares runs made in the same
invocation, because absolute times drift on a shared machine. Timed work runs in fresh child processes so that
memory peaks and import costs are those a user would see.
"""
