# frozen_string_literal: true

module Shop
  # A shopping cart: line items, quantities, one discount code, tax.
  class Cart
    LineItem = Struct.new(:product, :quantity) do
      def total
        product.price * quantity
      end
    end

    attr_reader :currency, :discount

    def initialize(currency: 'USD', tax_rate: 0)
      @currency = currency
      @tax_rate = tax_rate
      @items = {}
      @discount = nil
    end

    def add(product, quantity = 1)
      raise ArgumentError, 'quantity must be positive' unless quantity.positive?
      raise Money::CurrencyMismatch, 'product priced in another currency' if product.price.currency != currency

      item = (@items[product.sku] ||= LineItem.new(product, 0))
      item.quantity += quantity
      self
    end

    def remove(sku, quantity = nil)
      item = @items[sku] or return self
      if quantity.nil? || quantity >= item.quantity
        @items.delete(sku)
      else
        item.quantity -= quantity
      end
      self
    end

    def items
      @items.values
    end

    def item_count
      items.sum(&:quantity)
    end

    def empty?
      @items.empty?
    end

    def apply(discount)
      @discount = discount
      self
    end

    def subtotal
      items.map(&:total).reduce(Money.zero(currency), :+)
    end

    def discount_amount
      discount ? discount.amount_off(subtotal) : Money.zero(currency)
    end

    def tax
      (subtotal - discount_amount) * @tax_rate
    end

    def total
      subtotal - discount_amount + tax
    end

    def clear
      @items.clear
      @discount = nil
      self
    end
  end
end
