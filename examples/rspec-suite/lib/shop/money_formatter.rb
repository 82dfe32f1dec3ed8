# frozen_string_literal: true

module Shop
  # Formats Money for humans: "$1,234.50", "-€3.00", "12.00 CHF".
  class MoneyFormatter
    SYMBOLS = { 'USD' => '$', 'EUR' => '€', 'GBP' => '£' }.freeze

    def initialize(thousands: ',', decimal: '.', symbol: true)
      @thousands = thousands
      @decimal = decimal
      @symbol = symbol
    end

    def format(money)
      units, cents = money.cents.abs.divmod(100)
      number = "#{group(units)}#{@decimal}#{cents.to_s.rjust(2, '0')}"
      sign = money.negative? ? '-' : ''
      symbol = SYMBOLS[money.currency]
      if @symbol && symbol
        "#{sign}#{symbol}#{number}"
      else
        "#{sign}#{number} #{money.currency}"
      end
    end

    private

    def group(units)
      units.to_s.reverse.scan(/\d{1,3}/).join(@thousands).reverse
    end
  end
end
