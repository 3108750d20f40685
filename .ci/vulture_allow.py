# vulture's allow-list: names it reports as unused that are used, each with why.
# `.ci/run` runs `vulture newsletter .ci/vulture_allow.py --min-confidence 60`; anything else it
# reports is dead code: remove it (and any docstring or doc page that describes it).
# ruff: noqa
from newsletter.cli import doctor as cli_doctor, sequences as cli_sequences, serving, subscribers
from newsletter.cli import NewsletterGroup
from newsletter.insights.queries import _LinkCollector
from newsletter.insights import report
from newsletter.preview import server, state
from newsletter.replies import decode, mailbox
from newsletter.sending import ledger
from newsletter.sending.transports import PreparingTransport
from newsletter.sending.transports.sendgrid import body
from newsletter.sequences import runner
from newsletter import step
from newsletter.store import engine, issues, schema
from newsletter import markdown, masking, plaintext, render, tokens
from newsletter.doctor import records

# click registers commands by decorator; nothing calls them by name.
NewsletterGroup.format_commands  # click calls it for the command list of `newsletter --help`
cli_sequences.list_
cli_doctor.secrets_init
cli_sequences.rename
serving.replies_show
serving.replies_fetch
serving.replies_done
serving.replies_answer
subscribers.remove
subscribers.list_
subscribers.untag
subscribers.import_
subscribers.export

# html.parser.HTMLParser calls its subclasses' handle_* hooks.
_LinkCollector.handle_starttag
_LinkCollector.handle_data
_LinkCollector.handle_endtag
decode._TextExtractor.handle_starttag
decode._TextExtractor.handle_endtag
decode._TextExtractor.handle_data
plaintext._HtmlText.handle_startendtag

# imap-tools builds each fetched message with the mailbox's email_message_class.
mailbox._.email_message_class

# Attributes a library reads: markdown-it's options, uvicorn's server, pygal's chart config,
# logging's record (the masking filter rewrites what the handler then formats).
masking._.msg
records._.nameservers  # dnspython's resolver reads them
records._.lifetime
_.redirect_slashes  # Starlette's router reads it (serve's 404 handler redirects instead)
masking._.exc_text
markdown._.linkify
server._.should_exit
report._.x_labels
report._.x_labels_major

# Counters and fields that tests, benchmarks or `--format json` read.
state._.renders  # tests/test_preview.py: how many renders a burst of saves caused
state._.render_ms  # benchmarks/preview_reload.py
runner._.runs  # tests/test_sequences.py: the background runner ran
runner._.rescheduled  # sequences run's report, printed and in JSON
ledger._.taken_over_send  # a Lease dataclass field: which stale send the lease took over

# The report's headline figures, read by its Jinja template.
report.Headline.list_size
report.Headline.change_30d
report.Headline.last_title
report.Headline.compared
report.Headline.click_rate
report.Headline.click_median
report.Headline.reply_rate
report.Headline.reply_median

# Enum members, used by value (the strings stored in the database).
schema.SubscriberStatus.UNCONFIRMED
schema.SubscriberStatus.UNSUBSCRIBED
schema.SubscriberStatus.BOUNCED
schema.SubscriberStatus.COMPLAINED
schema.DeliveryState.PENDING
schema.DeliveryState.DELIVERED
schema.DeliveryState.BOUNCED
schema.DeliveryState.DROPPED

# Named in a typing.cast string ("PreparingTransport"), which vulture does not read.
PreparingTransport

# Public helpers the tests and benchmarks build on (the core uses their faster paths).
body.mail_body  # the v3 body as a dict: tests compare the fast writer against it
body.mail_json  # benchmarks/send_throughput.py and the fake server's tests
server.start_in_thread  # the preview in a thread: browser tests and benchmarks/preview_reload.py
engine.dispose_all  # tests and benchmarks close pools before forking or between processes
issues.is_published  # the publish rule for one slug: tests/test_archive_publish.py's oracle
step.step_issue_slug  # tests/test_sequences.py: a step's issues row by its path
tokens.reply_address_for  # tests/test_replies.py makes the reply address a send would carry
render.TemplateCodeCache.load_bytecode  # Jinja's BytecodeCache calls both for each template
render.TemplateCodeCache.dump_bytecode
