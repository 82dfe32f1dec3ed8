# frozen_string_literal: true

module Shop
  # Discount codes. Each returns the amount to take off a subtotal (never more than it).
  module Discount
    class Percentage
      attr_reader :code

      def initialize(code, percent)
        raise ArgumentError, 'percent must be within 0..100' unless (0..100).cover?(percent)

        @code = code
        @percent = percent
      end

      def amount_off(subtotal)
        subtotal * (@percent / 100r)
      end
    end

    class Fixed
      attr_reader :code

      def initialize(code, amount, minimum: nil)
        @code = code
        @amount = amount
        @minimum = minimum
      end

      def amount_off(subtotal)
        return Money.zero(subtotal.currency) if @minimum && subtotal < @minimum

        [@amount, subtotal].min
      end
    end
  end
end
