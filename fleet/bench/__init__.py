"""The benchmark harness behind ``manage.py fleet_bench``.

It starts real server processes on 127.0.0.1 over a throwaway database, drives them
with a small keep-alive HTTP load generator, stops them and reports the numbers.
Everything is bounded in time and request count and talks only to loopback.
"""
