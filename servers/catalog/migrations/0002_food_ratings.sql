-- Food quality is rated apart from the restaurant itself (the design's "rate restaurant,
-- food quality, driver"): each review may carry a food rating (0: not rated), and each
-- restaurant keeps its food rating the way it keeps its rating, sum and count.
ALTER TABLE catalog.reviews ADD COLUMN IF NOT EXISTS food_rating smallint NOT NULL DEFAULT 0
    CHECK (food_rating BETWEEN 0 AND 5);
ALTER TABLE catalog.restaurants
    ADD COLUMN IF NOT EXISTS food_rating_sum bigint NOT NULL DEFAULT 0
        CHECK (food_rating_sum >= 0),
    ADD COLUMN IF NOT EXISTS food_rating_count integer NOT NULL DEFAULT 0
        CHECK (food_rating_count >= 0);
