# frozen_string_literal: true
#
# warren_rspec.rb: Warren's warm RSpec runner (../PROTOCOL.md, `serve`), run in the suite
# directory as
#
#   [bundle exec] ruby /abs/path/warren_rspec.rb serve
#
# Commands come on stdin, one JSON object a line:
#   {"cmd":"run","batch":7,"events":"/abs/events-7.jsonl","ids":["./spec/x_spec.rb[1:2]"]}
#
# At the first command this process (the parent) loads what a cold rspec loads before its spec
# files: rspec-core, then the options of .rspec / ~/.rspec / .rspec-local / SPEC_OPTS applied
# as RSpec applies them before its `--require`s (-I, --default-path, --pattern, --seed...),
# then the `--require`d files (spec_helper, rails_helper, ...) and warren_formatter.rb, in
# RSpec's order, then the default rspec-mocks / rspec-expectations files when the helpers chose
# no other (RSpec requires them at the first example group). That is done once; the helpers
# see the options of a run of the whole suite (`config.files_to_run`: every spec file), as no
# batch is known yet. Each batch then runs in a fork of that loaded state (the
# copy-on-write model of test-queue and spork): the fork points WarrenFormatter at the batch's
# events file and runs RSpec with the options of the cold command
#
#   rspec --require warren_formatter.rb --format WarrenFormatter --out /dev/null --no-color <ids>
#
# (the spec files are loaded in the fork, every batch afresh; the `--require`s are loaded
# already). The formatter writes the batch's events, `done` included, as in a cold run; the
# parent writes the last line, `end`, when the fork is gone:
#   {"event":"end","batch":7,"code":<the fork's exit status>,"rss":<the parent's resident bytes>}
#   {"event":"end","batch":7,"code":null,"signal":"SIGKILL","rss":...}  (the fork was killed)
#
# - A fork starts as a cold rspec would: ARGV and $0 as a cold rspec's, stdin /dev/null,
#   WARREN_EVENTS set, signal handlers as inherited, a fresh random seed (unless one was given,
#   or set by a helper; a helper's `Kernel.srand config.seed` is redone with the fork's seed).
#   On Linux it dies with the parent (PR_SET_PDEATHSIG, through fiddle), so a killed runner
#   leaves no batch running. Its at_exit hooks run (the helpers' too, as in every preforking
#   server), then it ends with exit!, skipping Ruby's teardown of the inherited heap.
# - If loading the helpers fails in the parent (a syntax error in spec_helper, an `exit`...),
#   every batch of this runner runs as the cold command instead (a process of its own), so
#   that the events are exactly a cold run's, the error included.
# - End of stdin: exit 0, after the batches already sent. A batch that is running when stdin
#   closes with nothing more sent (the slot went away) is killed. SIGTERM, SIGINT, SIGHUP,
#   SIGQUIT: the running fork gets the same signal (SIGKILL after a grace), then this process
#   dies of it. No `end` is written for a batch ended that way. Forks are reaped (SIGCHLD wakes
#   the parent); no other child of the process is touched.
#
# Loads nothing but rspec-core (and json, to read the suite's options) before the suite's helpers, so that they load as in a cold run.

require 'json'

module WarrenRSpec
  FORMATTER = File.expand_path('warren_formatter.rb', __dir__)
  # The options of the cold command (adapter.ts), ids appended.
  COLD_ARGS = ['--require', FORMATTER, '--format', 'WarrenFormatter', '--out', '/dev/null', '--no-color'].freeze
  # The options RSpec applies before its `--require`s (ConfigurationOptions::OPTIONS_ORDER).
  PRE_REQUIRE_OPTIONS = %i[
    deprecation_stream libs default_path only_failures files_or_directories_to_run pattern exclude_pattern order
  ].freeze
  STOP_SIGNALS = %w[TERM INT HUP QUIT].freeze
  # How long a fork told to stop may take before SIGKILL.
  KILL_GRACE_SEC = 3.0
  PR_SET_PDEATHSIG = 1

  # The project's own rspec options and paths (its test command's: WARREN_FRAMEWORK_ARGS, a
  # JSON array, PROTOCOL.md).
  SUITE_ARGS = JSON.parse(ENV['WARREN_FRAMEWORK_ARGS'] || '[]').freeze

  class Server
    # suite_options: SUITE_ARGS without its paths (the slot's split, adapter.ts rspecOptions)
    def initialize(suite_options = [])
      @suite_options = suite_options
      @buffer = String.new(encoding: Encoding::BINARY) # stdin as read; a line is UTF-8 JSON
      @eof = false
      @stopping = nil # a stop signal received
      @loaded = nil # nil: not yet; true: warm; false: the helpers failed to load, batches run cold
      @wake_r, @wake_w = IO.pipe
    end

    def serve
      fast_fork_exit
      while (line = next_line)
        handle(line)
      end
      exit(0)
    end

    private

    # A fork's exit: the at_exit hooks run as usual (the suite's, registered before this one, run
    # first), then the process ends without Ruby's teardown, which walks the whole inherited heap
    # (~50 ms for a 150k-object helper, more for an app). Not for a fork ending with an uncaught
    # exception or a signal: Ruby reports those in its teardown.
    def fast_fork_exit
      parent = Process.pid
      at_exit do
        next if Process.pid == parent

        code = case $!
               when nil then 0
               when SystemExit then $!.status
               end
        if code
          $stdout.flush
          $stderr.flush
          exit!(code)
        end
      end
    end

    # --- stdin ---------------------------------------------------------------------------------

    # The next command line, nil at end of stdin (a last line without newline is dropped).
    def next_line
      loop do
        if (i = @buffer.index("\n"))
          line = @buffer.slice!(0, i + 1).force_encoding(Encoding::UTF_8).strip
          return line unless line.empty?

          next
        end
        return nil if @eof

        wait_io(nil)
        stop_now(nil) if @stopping
      end
    end

    # Waits (up to `timeout` s) for stdin or a wake-up (SIGCHLD, a stop signal); reads what came.
    def wait_io(timeout)
      ios = [@wake_r]
      ios << $stdin unless @eof
      ready = IO.select(ios, nil, nil, timeout)
      return unless ready

      ready[0].each do |io|
        if io.equal?(@wake_r)
          @wake_r.read_nonblock(4096, exception: false)
        else
          read_stdin
        end
      end
    end

    def read_stdin
      chunk = $stdin.read_nonblock(65_536, exception: false)
      if chunk.nil?
        @eof = true
      elsif chunk != :wait_readable
        @buffer << chunk
      end
    rescue IOError, SystemCallError
      @eof = true
    end

    def wake
      @wake_w.write_nonblock('.', exception: false)
    rescue IOError, SystemCallError
      nil
    end

    # --- commands ------------------------------------------------------------------------------

    def handle(line)
      # The heavy part comes first, at the first command, so that the parent loads nothing of
      # its own (json, ...) before the suite's helpers.
      preload if @loaded.nil?
      require 'json'
      cmd = begin
        JSON.parse(line)
      rescue JSON::ParserError
        warn "warren runner: a command that is not JSON: #{line[0, 200]}"
        return
      end
      unless cmd.is_a?(Hash) && cmd['cmd'] == 'run' && cmd['events'].is_a?(String) && cmd['ids'].is_a?(Array)
        warn "warren runner: unknown command: #{line[0, 200]}"
        return
      end
      events = cmd['events']
      ids = cmd['ids'].map(&:to_s)
      # A batch that was sent before stdin closed is run to its end; one that is running when
      # stdin closes (the slot is gone) is killed.
      @eof_before_batch = @eof
      result =
        begin
          @loaded ? run_forked(events, ids, cmd['batch']) : run_cold(events, ids)
        rescue StandardError => e
          write_line(events, event: 'error', message: "warren runner: the batch failed: #{e.class}: #{e.message}",
                             details: (e.backtrace || []).join("\n"))
          { code: 1 }
        end
      end_event = { event: 'end' }
      end_event[:batch] = cmd['batch'] unless cmd['batch'].nil?
      end_event.merge!(result)
      size = rss
      end_event[:rss] = size if size
      write_line(events, end_event)
    end

    # The cold command's arguments as a cold rspec's ARGV has them: unfrozen strings in the
    # locale's encoding (binary when not ASCII under a US-ASCII locale), not UTF-8 from JSON.
    def cold_args(ids)
      enc = Encoding.find('locale')
      # a batch: the suite's options and the batch's ids; the preload (no ids): the suite's
      # whole command, options and paths, as a run of the whole suite has them
      suite = ids.empty? ? SUITE_ARGS : @suite_options
      (COLD_ARGS + suite + ids).map do |arg|
        arg = arg.dup.force_encoding(enc)
        arg.force_encoding(Encoding::BINARY) if enc == Encoding::US_ASCII && !arg.ascii_only?
        arg
      end
    end

    def write_line(path, event)
      File.open(path, 'a') { |f| f.write(JSON.generate(event) << "\n") }
    rescue StandardError => e
      warn "warren runner: cannot write to the events file #{path}: #{e.message}"
    end

    # --- loading the suite once ------------------------------------------------------------------

    # What a cold `rspec <COLD_ARGS>` does before loading spec files, up to its `--require`s
    # (RSpec::Core::ConfigurationOptions#configure, in its order). The ids of the batches are
    # not known here: the options are those of a run of the whole suite (as `rspec` with no
    # ids), which is what a helper reading `config.files_to_run` sees.
    def preload
      @loaded = false
      @program = rspec_program
      $0 = @program
      Process.setproctitle("#{File.basename(__FILE__)} serve") # ps: the runner, not $0
      ARGV.replace(cold_args([]))
      require 'rspec/core'
      RSpec::Core::Runner.disable_autorun! # as `rspec` (Runner.invoke) does
      config = RSpec.configuration
      initial_seed = config.seed
      options = RSpec::Core::ConfigurationOptions.new(cold_args([])).options
      order = defined?(RSpec::Core::ConfigurationOptions::OPTIONS_ORDER) ? RSpec::Core::ConfigurationOptions::OPTIONS_ORDER - [:requires] : PRE_REQUIRE_OPTIONS
      unforced = defined?(RSpec::Core::ConfigurationOptions::UNFORCED_OPTIONS) ? RSpec::Core::ConfigurationOptions::UNFORCED_OPTIONS : []
      order.each do |key|
        next unless options.key?(key)

        unforced.include?(key) ? config.__send__("#{key}=", options[key]) : config.force(key => options[key])
      end
      @preloaded_libs = options[:libs] || []
      # Configuration#requires=, without RSpec's reporting (an error here means: run cold).
      dirs = ['lib', config.default_path].select { |p| File.directory?(p) }
      RSpec::Core::RubyProject.add_to_load_path(*dirs)
      (options[:requires] || []).each { |path| require path }
      # Whether the suite's seed is still RSpec's random one (else given, or set by a helper),
      # and whether a helper seeded Kernel's generator with it.
      @fresh_seed = config.seed == initial_seed
      @helper_srand = Random.respond_to?(:seed) && Random.seed == config.seed
      preload_default_frameworks(config)
      # This file's frames are below RSpec's in a fork, as bin/rspec's are in a cold run.
      config.backtrace_exclusion_patterns << %r{/warren_rspec\.rb:}
      @loaded = true
    rescue SignalException
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- SyntaxError, LoadError, exit...
      warn "warren runner: loading the suite's helpers failed (#{e.class}: #{e.message.to_s.lines.first.to_s.strip}); " \
           'each batch runs as a cold rspec process'
    ensure
      after_preload
    end

    # The default mock and expectation libraries, which RSpec requires at the first example group
    # when the helpers chose none (Configuration#mock_framework, #expectation_frameworks): required
    # here, after the helpers as in a cold run, instead of in every fork (~20 ms a batch). Only the
    # files: RSpec still configures them in the fork, at the same point as in a cold run.
    def preload_default_frameworks(config)
      if config.instance_variable_get(:@mock_framework).nil?
        begin
          RSpec::Support.require_rspec_core('mocking_adapters/rspec')
        rescue LoadError
          nil # rspec-mocks is not installed: RSpec falls back to :nothing
        end
      end
      return unless (config.instance_variable_get(:@expectation_frameworks) || [nil]).empty?

      begin
        require 'rspec/expectations'
      rescue LoadError
        nil
      end
    end

    def after_preload
      require 'json'
      @signal_handlers = {}
      STOP_SIGNALS.each do |sig|
        @signal_handlers[sig] = trap(sig) do
          @stopping ||= sig
          wake
        end
      end
      @chld_handler = trap('CHLD') { wake }
      @pdeathsig = pdeathsig_function if @loaded
      GC.start if @loaded # fewer pages for the forks to copy
    end

    # The path a cold `rspec` runs as ($0): the first rspec on PATH (under `bundle exec`, the
    # bundle's).
    def rspec_program
      ENV.fetch('PATH', '').split(File::PATH_SEPARATOR).each do |dir|
        f = File.join(dir, 'rspec')
        return f if File.file?(f) && File.executable?(f)
      end
      'rspec'
    end

    # prctl(2), to tie a fork's life to this process (Linux only; nil elsewhere).
    def pdeathsig_function
      return nil unless RUBY_PLATFORM.include?('linux')

      require 'fiddle'
      Fiddle::Function.new(Fiddle::Handle::DEFAULT['prctl'], [Fiddle::TYPE_INT] + [Fiddle::TYPE_LONG] * 4, Fiddle::TYPE_INT)
    rescue StandardError, LoadError
      nil
    end

    # --- a batch ---------------------------------------------------------------------------------

    def run_forked(events, ids, batch)
      $stdout.flush
      $stderr.flush
      parent = Process.pid
      pid = fork do
        Process.setproctitle("#{File.basename(__FILE__)} batch #{batch}")
        in_fork(parent, events)
        exit(run_rspec(ids).to_i)
      end
      status_of(wait_for(pid))
    end

    # The fork, before RSpec: as a cold rspec process would start.
    def in_fork(parent, events)
      @wake_r.close
      @wake_w.close
      STOP_SIGNALS.each { |sig| trap(sig, @signal_handlers[sig] || 'DEFAULT') }
      trap('CHLD', @chld_handler || 'DEFAULT')
      if @pdeathsig
        @pdeathsig.call(PR_SET_PDEATHSIG, Signal.list['KILL'], 0, 0, 0)
        exit!(1) if Process.ppid != parent # the parent died before that
      end
      $stdin.reopen(File::NULL)
      ENV['WARREN_EVENTS'] = events
      WarrenFormatter.events_path = events if defined?(WarrenFormatter)
      config = RSpec.configuration
      # A cold process has a seed of its own (Ruby reseeded Kernel's generator at fork).
      config.ordering_manager.instance_variable_set(:@seed, rand(0xFFFF)) if @fresh_seed
      srand(config.seed) if @helper_srand
    end

    # RSpec::Core::Runner.run with the cold command's options; the -I directories of the options
    # are on $LOAD_PATH since the parent (a cold rspec puts them there once).
    def run_rspec(ids)
      args = cold_args(ids)
      ARGV.replace(args)
      RSpec::Core::Runner.trap_interrupt
      options = RSpec::Core::ConfigurationOptions.new(args)
      options.options[:libs] -= @preloaded_libs if options.options[:libs]
      runner = options.options[:runner]
      if runner
        runner.call(options, $stderr, $stdout)
      else
        RSpec::Core::Runner.new(options).run($stderr, $stdout)
      end
    end

    # The helpers failed to load here: the cold command, in a process of its own.
    def run_cold(events, ids)
      argv = File.exist?('Gemfile') ? %w[bundle exec rspec] : %w[rspec]
      pid = begin
        Process.spawn({ 'WARREN_EVENTS' => events }, *argv, *COLD_ARGS, *@suite_options, *ids, in: File::NULL)
      rescue SystemCallError => e
        write_line(events, event: 'error', message: "warren runner: cannot start #{argv.join(' ')}: #{e.message}")
        return { code: 127 }
      end
      status_of(wait_for(pid))
    end

    def status_of(status)
      if status.signaled?
        { code: nil, signal: "SIG#{Signal.signame(status.termsig)}" }
      else
        { code: status.exitstatus }
      end
    end

    # Waits for the batch's process; a stop signal, or the end of stdin with nothing more sent,
    # ends it (and this process).
    def wait_for(pid)
      loop do
        _, status = Process.waitpid2(pid, Process::WNOHANG)
        return status if status

        wait_io(1.0)
        stop_now(pid) if @stopping
        if @eof && !@eof_before_batch && !@buffer.include?("\n")
          stop_child(pid, 'TERM')
          exit(0)
        end
      end
    end

    def stop_child(pid, sig)
      begin
        Process.kill(sig, pid)
      rescue Errno::ESRCH
        nil
      end
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + KILL_GRACE_SEC
      loop do
        return if Process.waitpid2(pid, Process::WNOHANG)

        if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          Process.kill('KILL', pid)
          Process.waitpid2(pid)
          return
        end
        sleep 0.05
      end
    rescue Errno::ECHILD, Errno::ESRCH
      nil
    end

    # A stop signal: the running batch (if any) gets it too, then this process dies of it.
    def stop_now(pid)
      sig = @stopping
      stop_child(pid, sig) if pid
      trap(sig, 'DEFAULT')
      Process.kill(sig, Process.pid)
      sleep 1
      exit!(128 + Signal.list[sig])
    end

    # This process's resident size, in bytes.
    def rss
      File.foreach('/proc/self/status') do |l|
        return l.split[1].to_i * 1024 if l.start_with?('VmRSS:')
      end
      nil
    rescue SystemCallError
      kb = `ps -o rss= -p #{Process.pid}`.strip
      kb.empty? ? nil : kb.to_i * 1024
    end
  end

  def self.main(argv)
    unless argv.first == 'serve'
      warn "usage: ruby #{File.basename(__FILE__)} serve [the suite's rspec options] (got #{argv.inspect})"
      exit(2)
    end
    Server.new(argv.drop(1)).serve
  end
end

WarrenRSpec.main(ARGV.dup)
