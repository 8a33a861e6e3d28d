"""Alert intake: one module per source (sns, alertmanager, agent), each turning a request into
normalized ``Alert`` objects (bot.intake.model) handed to bot.incidents."""
