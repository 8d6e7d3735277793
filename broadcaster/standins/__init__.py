"""Local stand-ins for the platforms' APIs, speaking their real wire formats.

The drill and the tests point the real tweepy and facebook-sdk code at these servers on
127.0.0.1, so every request goes through the same HTTP, headers, signing and error parsing
it would against X or Facebook. Each stand-in can be scripted to misbehave the way the
platforms do (rate limits, 5xx, an HTML error page, throttling codes, expired tokens, slow
answers, a connection dropped after the post was made).
"""
