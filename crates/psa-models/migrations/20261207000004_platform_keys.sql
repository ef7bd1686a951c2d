-- Keys the platform makes for itself. `export_archives`: the age key export archives are
-- encrypted to in the store. Its public half is kept plain (writing an archive needs no secret);
-- its secret half only sealed with PSA_SECRET_KEY, so reading the database and the bucket is
-- not enough to read an archive, and `psa secrets reseal` moves it to a new PSA_SECRET_KEY
-- without touching the archives.
CREATE TABLE platform_keys (
    name text PRIMARY KEY,
    public_key text NOT NULL,
    sealed_secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    resealed_at timestamptz
);

-- The API reads it, and makes it when it is the first to need it.
GRANT SELECT, INSERT ON platform_keys TO psa_api;
