"""The project's benchmark (`make bench`): training speed, HTTP serving against the framework's ceiling, cold start
of the recommend function, and scale to 100k products; one table, written as JSON and Markdown.

One module per part (train, serve, cold, scale), plus what they share: `common` (statistics, memory, the machine,
child processes), `deployment` (the trained Online Retail model the serve and cold parts use), `report` (the
table and its files) and `runner` (options and the order of the parts).

Every figure that can be repeated is the median of repeated runs, and every ratio compares runs made in the same
invocation, because absolute times drift on a shared machine. Timed work runs in fresh child processes so that
memory peaks and import costs are those a user would see.
"""
