# frozen_string_literal: true

module Shop
  Product = Struct.new(:sku, :name, :price, :category, keyword_init: true) do
    def to_s
      "#{name} (#{price})"
    end
  end
end
