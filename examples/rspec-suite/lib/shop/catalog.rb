# frozen_string_literal: true

module Shop
  # An in-memory product catalog.
  class Catalog
    class UnknownProduct < KeyError; end

    def initialize(products = [])
      @products = {}
      products.each { |p| add(p) }
    end

    def add(product)
      raise ArgumentError, "duplicate sku #{product.sku}" if @products.key?(product.sku)

      @products[product.sku] = product
      self
    end

    def fetch(sku)
      @products.fetch(sku) { raise UnknownProduct, "no product with sku #{sku.inspect}" }
    end

    def size
      @products.size
    end

    def in_category(category)
      @products.values.select { |p| p.category == category }.sort_by(&:name)
    end

    def search(text)
      needle = text.to_s.downcase
      @products.values.select { |p| p.name.downcase.include?(needle) }.sort_by(&:name)
    end
  end
end
