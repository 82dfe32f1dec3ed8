# frozen_string_literal: true
#
# Warren's RSpec 3 formatter: writes the events of PROTOCOL.md (one JSON object per line) to the
# file named by ENV['WARREN_EVENTS'].
#
#   rspec --require /abs/path/warren_formatter.rb --format WarrenFormatter --out /dev/null \
#         [--dry-run] [ids...]
#
# Events: start, test (dry-run), test_start / test_end (run), error, done.
#
# Besides the formatter, this file adjusts RSpec a little (prepended patches, inert for other
# formatters except where noted):
# - errors outside examples (RSpec reports them as a preformatted `message`) are captured with
#   their exception and, for load errors and after(:context) hooks, the spec file, so that they
#   become structured `error` events. An error in a file required from `.rspec` (spec_helper)
#   happens before this file is required: it only gets a generic `error` event (see rspec's output);
# - in --dry-run, a file that fails to load no longer hides every other file's examples (RSpec
#   aborts the whole run on a load error): the other files are still listed, and the broken file
#   is listed as a test of its own (`./spec/x_spec.rb`, "spec/x_spec.rb (failed to load)").
#   The exit status stays non-zero. In run mode RSpec's own behaviour is kept: a load error in any
#   file aborts the run before any example runs (every example of the batch is left unreported);
# - an exception escaping RSpec altogether (not a signal, not `exit`) is written as an `error`
#   event at exit, without `done`.
# `done` is written on close unless the run was aborted by a signal (SIGINT handled by RSpec,
# SIGTERM/SIGHUP...) or by an exception or `exit` escaping the run.

require 'json'
require 'rspec/core'
require 'rspec/core/formatters/base_formatter'

class WarrenFormatter
  RSpec::Core::Formatters.register self,
                                   :start, :example_started, :example_passed, :example_failed,
                                   :example_pending, :message, :close

  # Thread-local keys set by the patches below while RSpec reports an error outside examples.
  CONTEXT_KEY = :__warren_non_example_exception
  LOADING_KEY = :__warren_loading_file
  GROUP_FILE_KEY = :__warren_after_context_file

  class << self
    # Set once a WarrenFormatter has been created (before the spec files load).
    attr_accessor :active
    # True once RSpec's SIGINT handler ran (RSpec then finishes the current example and closes).
    attr_accessor :interrupted
    # Errors reported before the formatter was created (a failing `--require`), in order.
    def early_errors
      @early_errors ||= []
    end

    # Spec files (absolute) that failed to load, in order.
    def load_failures
      @load_failures ||= []
    end

    # The events file, shared by the formatter and the at_exit hook. Nil when WARREN_EVENTS is unset.
    def events_io
      return @events_io if defined?(@events_io)

      path = ENV['WARREN_EVENTS']
      @events_io =
        if path.nil? || path.empty?
          nil
        else
          File.open(path, 'a').tap { |io| io.sync = true }
        end
    end

    # serve mode (warren_rspec.rb): the batch's events file, given by the warm runner in the
    # batch's fork before RSpec runs (instead of WARREN_EVENTS).
    def events_path=(path)
      @events_io = File.open(path, 'a').tap { |io| io.sync = true }
    end

    def write_event(io, event)
      io.write(JSON.generate(scrub(event)) << "\n")
      io.flush
    end

    # "./spec/x_spec.rb" or an absolute path inside the suite -> "spec/x_spec.rb".
    def relative_file(path)
      return nil if path.nil? || path.to_s.empty?

      rel = RSpec::Core::Metadata.relative_path(File.expand_path(path.to_s)) || path.to_s
      rel.sub(%r{\A\./}, '')
    end

    # [one-line message, details] for an exception; `backtrace` already formatted.
    def describe_exception(exception, backtrace)
      text = exception.message.to_s
      lines = text.split("\n", -1)
      first_index = lines.index { |l| !l.strip.empty? }
      first = first_index ? lines[first_index].strip : ''
      rest = first_index ? lines[(first_index + 1)..-1] : []
      rest = rest.drop_while { |l| l.strip.empty? }
      rest.pop while rest.any? && rest.last.strip.empty?

      message = first.empty? ? exception.class.name.to_s : "#{exception.class.name}: #{first}"
      parts = []
      parts << rest.join("\n") unless rest.empty?
      parts << backtrace.join("\n") unless backtrace.nil? || backtrace.empty?
      cause = exception.respond_to?(:cause) ? exception.cause : nil
      depth = 0
      while cause && depth < 5
        cause_first = cause.message.to_s.split("\n").find { |l| !l.strip.empty? }.to_s.strip
        parts << "Caused by: #{cause.class.name}#{cause_first.empty? ? '' : ": #{cause_first}"}\n" \
                 "#{clean_backtrace(cause.backtrace).first(10).join("\n")}"
        cause = cause.respond_to?(:cause) ? cause.cause : nil
        depth += 1
      end
      [message, parts.empty? ? nil : parts.join("\n")]
    end

    def clean_backtrace(backtrace, metadata = nil)
      return [] if backtrace.nil?

      formatter = RSpec.configuration.backtrace_formatter
      metadata ? formatter.format_backtrace(backtrace, metadata) : formatter.format_backtrace(backtrace)
    rescue StandardError
      backtrace
    end

    def scrub(value)
      case value
      when String
        s = value.dup.force_encoding(Encoding::UTF_8)
        s.valid_encoding? ? s : s.scrub('?')
      when Hash then value.each_with_object({}) { |(k, v), h| h[k] = scrub(v) }
      when Array then value.map { |v| scrub(v) }
      else value
      end
    end
  end

  def initialize(output)
    @io = WarrenFormatter.events_io
    if @io.nil?
      warn 'WarrenFormatter: WARREN_EVENTS is not set; writing events to the formatter output'
      @io = output
    end
    @dry_run = RSpec.configuration.dry_run?
    @started = false
    WarrenFormatter.active = true
    if WarrenFormatter.early_errors.empty? && RSpec.world.non_example_failure
      # A file required from .rspec (spec_helper...) failed before this file was required, so
      # before our patches existed: RSpec printed it on its own output; we only know it happened.
      emit(event: 'error',
           message: 'An error occurred while loading a file required before WarrenFormatter ' \
                    '(e.g. `--require spec_helper` in .rspec); see rspec\'s output')
    end
    WarrenFormatter.early_errors.each { |ctx| emit_error(ctx) }
    WarrenFormatter.early_errors.clear
  end

  # --- notifications -----------------------------------------------------------------------------

  def start(notification)
    @dry_run = RSpec.configuration.dry_run?
    broken = @dry_run ? WarrenFormatter.load_failures.uniq : []
    emit(event: 'start', count: notification.count + broken.size)
    @started = true
    broken.each { |abs| emit_broken_file_test(abs) }
  end

  def example_started(notification)
    ex = notification.example
    if @dry_run
      emit(event: 'test', **identity(ex))
    else
      emit(event: 'test_start', **identity(ex))
    end
  end

  def example_passed(notification)
    finish(notification.example, 'passed')
  end

  def example_failed(notification)
    finish(notification.example, 'failed')
  end

  def example_pending(notification)
    finish(notification.example, 'pending')
  end

  # RSpec reports errors outside examples (load errors, suite hooks, after(:context) hooks) as a
  # preformatted message; the patch on Reporter#notify_non_example_exception tells us the exception.
  def message(notification)
    ctx = Thread.current[CONTEXT_KEY]
    if ctx
      emit_error(ctx) unless WarrenFormatter.early_errors.include?(ctx)
    elsif notification.message.to_s =~ /\A\s*(An error occurred|While loading)/
      # Fallback, should the patch not be in place: the text is all we have.
      lines = notification.message.to_s.strip.split("\n")
      emit(event: 'error', message: lines.first.to_s.strip, details: lines.drop(1).join("\n"))
    end
  end

  def close(_notification)
    aborted = WarrenFormatter.interrupted || !$!.nil?
    emit(event: 'done') unless aborted
  end

  private

  def emit(event)
    WarrenFormatter.write_event(@io, event)
  end

  def identity(example)
    {
      id: example.id,
      file: WarrenFormatter.relative_file(example.metadata[:rerun_file_path] || example.metadata[:file_path]),
      name: example.full_description
    }
  end

  def finish(example, status)
    return if @dry_run

    result = example.execution_result
    event = { event: 'test_end', **identity(example), status: status, durationMs: duration_ms(result) }
    case status
    when 'failed'
      exception = result.exception || example.exception
      if exception
        message, details = WarrenFormatter.describe_exception(
          exception, WarrenFormatter.clean_backtrace(exception.backtrace, example.metadata)
        )
        event[:message] = message
        event[:details] = details if details
      end
    when 'pending'
      event[:message] = result.pending_message.to_s
      pending_exception = result.pending_exception
      if pending_exception
        message, details = WarrenFormatter.describe_exception(
          pending_exception, WarrenFormatter.clean_backtrace(pending_exception.backtrace, example.metadata)
        )
        event[:details] = ["Failed as expected: #{message}", details].compact.join("\n")
      end
    end
    emit(event)
  end

  def duration_ms(result)
    t = result.run_time
    t ? (t * 1000.0).round(3) : 0
  end

  def emit_error(ctx)
    exception = ctx[:exception]
    description_lines = ctx[:description].to_s.strip.split("\n")
    # LoadError: "An error occurred while loading ./x.rb. - Did you mean?" + suggestions below.
    if description_lines.first.to_s.end_with?(' - Did you mean?')
      description_lines[0] = description_lines[0].delete_suffix(' - Did you mean?')
      description_lines.insert(1, 'Did you mean?')
    end
    message, details = WarrenFormatter.describe_exception(
      exception, WarrenFormatter.clean_backtrace(exception.backtrace)
    )
    event = { event: 'error', message: "#{description_lines.first} #{message}".strip }
    all_details = [description_lines.drop(1).join("\n"), details].reject { |d| d.nil? || d.strip.empty? }
    event[:details] = all_details.join("\n") unless all_details.empty?
    file = WarrenFormatter.relative_file(ctx[:file])
    event[:file] = file if file
    # a spec file that fails to load fails the same way every time: not re-run
    event[:load] = true if ctx[:load_error]
    emit(event)
    # A file that fails to load during discovery is also listed as a test (after `start`).
    emit_broken_file_test(ctx[:file]) if @dry_run && @started && ctx[:load_error]
  end

  def emit_broken_file_test(abs)
    rel = WarrenFormatter.relative_file(abs)
    emit(event: 'test', id: "./#{rel}", file: rel, name: "#{rel} (failed to load)")
  end

  # --- RSpec patches ------------------------------------------------------------------------------

  # Captures the exception behind RSpec's preformatted error messages.
  module ReporterPatch
    def notify_non_example_exception(exception, context_description)
      loading = Thread.current[LOADING_KEY]
      spec_file = loading && loading[:method] == :load ? loading[:file] : nil
      ctx = {
        exception: exception,
        description: context_description,
        file: spec_file || Thread.current[GROUP_FILE_KEY],
        load_error: !spec_file.nil?
      }
      WarrenFormatter.load_failures << spec_file if spec_file
      # Errors in `--require`d files (spec_helper) come before any formatter exists: kept for it.
      WarrenFormatter.early_errors << ctx unless WarrenFormatter.active

      previous = Thread.current[CONTEXT_KEY]
      Thread.current[CONTEXT_KEY] = ctx
      begin
        super
      ensure
        Thread.current[CONTEXT_KEY] = previous
      end
    end
  end

  # Knows which spec file is being loaded; in --dry-run, keeps listing after a load error.
  module ConfigurationPatch
    def load_spec_files
      super
      if WarrenFormatter.active && dry_run? && !WarrenFormatter.load_failures.empty? &&
         !WarrenFormatter.interrupted && !RSpec.world.rspec_is_quitting
        RSpec.world.wants_to_quit = false
      end
    end

    private

    def load_file_handling_errors(method, file)
      previous = Thread.current[LOADING_KEY]
      Thread.current[LOADING_KEY] = { method: method, file: file }
      begin
        super
      ensure
        Thread.current[LOADING_KEY] = previous
      end
    end
  end

  # after(:context) hook errors: remember the group's file.
  module AfterContextHookPatch
    def run(example)
      previous = Thread.current[GROUP_FILE_KEY]
      group = example.is_a?(Class) ? example : example.class
      meta = group.respond_to?(:metadata) ? group.metadata : nil
      Thread.current[GROUP_FILE_KEY] = meta && (meta[:rerun_file_path] || meta[:file_path])
      begin
        super
      ensure
        Thread.current[GROUP_FILE_KEY] = previous
      end
    end
  end

  # RSpec's SIGINT handler: the run then ends "normally" though it was aborted.
  module InterruptPatch
    def handle_interrupt
      WarrenFormatter.interrupted = true
      super
    end
  end
end

RSpec::Core::Reporter.prepend(WarrenFormatter::ReporterPatch)
RSpec::Core::Configuration.prepend(WarrenFormatter::ConfigurationPatch)
if defined?(RSpec::Core::Hooks::AfterContextHook)
  RSpec::Core::Hooks::AfterContextHook.prepend(WarrenFormatter::AfterContextHookPatch)
end
RSpec::Core::Runner.singleton_class.prepend(WarrenFormatter::InterruptPatch)
# Our patches' frames are noise in cleaned backtraces.
RSpec.configuration.backtrace_exclusion_patterns << %r{/warren_formatter\.rb:}

# An exception escaping RSpec (one it does not rescue, or raised by a formatter) is still reported.
# Signals and `exit` are not errors here: the missing `done` says enough.
at_exit do
  ex = $!
  if ex && !ex.is_a?(SystemExit) && !ex.is_a?(SignalException)
    io = WarrenFormatter.events_io
    if io
      message, details = WarrenFormatter.describe_exception(ex, ex.backtrace || [])
      WarrenFormatter.write_event(io, event: 'error', message: "RSpec aborted: #{message}", details: details)
    end
  end
end
