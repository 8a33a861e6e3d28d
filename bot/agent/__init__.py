"""stabilize agent: a small host agent that watches memory pressure, OOM kills, swap, CPU,
disk and services, and sends signed alerts to the bot's ``/alerts/agent``.

Standard library only, so it starts on a sick box where pip cannot run:
``python3 -m bot.agent --url https://bot.example.com --host prod-web-01``.
"""
