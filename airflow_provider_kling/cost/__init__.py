"""What a run costs before it is paid: prices (:mod:`.prices`), estimates (:mod:`.estimate`), caps
(:mod:`.budget`) and the ``plan`` of a DAG (:mod:`.plan`).

Nothing here is imported at DAG parse time: the operators load these modules when a task runs.
"""
