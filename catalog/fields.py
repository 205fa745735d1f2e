"""The names of a product's payload fields: one list for every layer.

Plain names with no import, so that the QuerySets (imported by the models)
can use them as well as validation, the API, the upsert and the file columns.
"""

# What a product payload carries, in the order files and the API show it.
# ``category`` is a foreign key: its column is ``category_id``.
PRODUCT_FIELDS = (
    "sku",
    "name",
    "slug",
    "description",
    "price",
    "stock",
    "is_active",
    "category",
)
# Fields a new product may leave out (an existing one keeps what is stored):
# a blank slug is derived from the name, the others take the model default.
PRODUCT_OPTIONAL = ("slug", "description", "stock", "is_active")
