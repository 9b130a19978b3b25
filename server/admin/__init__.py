"""The operator's admin API (aigc.v1.AdminService): recorded calls and usage.

access.py    admin keys (AIGC_ADMIN_KEYS), separate from caller keys
queries.py   the store reads: a page of calls, usage totals
servicer.py  AdminServicer: checks requests, answers, records each admin action
"""
