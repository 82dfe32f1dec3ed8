# frozen_string_literal: true

module Shop
  # An amount of money in integer cents, in one currency.
  class Money
    include Comparable

    class CurrencyMismatch < StandardError; end

    attr_reader :cents, :currency

    def self.zero(currency = 'USD')
      new(0, currency)
    end

    # Money.parse("12.34") => 1234 cents
    def self.parse(text, currency = 'USD')
      match = /\A\s*(-)?(\d+)(?:\.(\d{1,2}))?\s*\z/.match(text.to_s)
      raise ArgumentError, "not an amount: #{text.inspect}" unless match

      cents = (match[2].to_i * 100) + match[3].to_s.ljust(2, '0').to_i
      new(match[1] ? -cents : cents, currency)
    end

    def initialize(cents, currency = 'USD')
      raise ArgumentError, 'cents must be an Integer' unless cents.is_a?(Integer)

      @cents = cents
      @currency = currency.to_s.upcase.freeze
      freeze
    end

    def +(other)
      same_currency!(other)
      Money.new(cents + other.cents, currency)
    end

    def -(other)
      same_currency!(other)
      Money.new(cents - other.cents, currency)
    end

    # Multiplies by a number, rounding half away from zero to the cent.
    def *(factor)
      Money.new((cents * factor).round, currency)
    end

    # Splits into `parts` amounts that differ by at most one cent and add up to self.
    def allocate(parts)
      raise ArgumentError, 'parts must be positive' unless parts.positive?

      base, remainder = cents.divmod(parts)
      Array.new(parts) { |i| Money.new(base + (i < remainder ? 1 : 0), currency) }
    end

    def zero?
      cents.zero?
    end

    def negative?
      cents.negative?
    end

    def <=>(other)
      return nil unless other.is_a?(Money) && other.currency == currency

      cents <=> other.cents
    end

    def eql?(other)
      other.is_a?(Money) && other.cents == cents && other.currency == currency
    end
    alias == eql?

    def hash
      [cents, currency].hash
    end

    def to_s
      MoneyFormatter.new.format(self)
    end

    def inspect
      "#<Shop::Money #{cents} #{currency}>"
    end

    private

    def same_currency!(other)
      return if other.is_a?(Money) && other.currency == currency

      raise CurrencyMismatch, "cannot combine #{currency} with #{other.respond_to?(:currency) ? other.currency : other.class}"
    end
  end
end
