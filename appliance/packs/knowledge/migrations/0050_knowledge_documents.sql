-- Knowledge documents and their index state in Qdrant (appliance.knowledge).
--
-- "version" grows on every change of the indexed fields (trigger below), so the indexer compares versions
-- instead of clocks. "indexed_chunks" is a high-water mark: it is raised before points are written, so a run
-- cut short never leaves points that no row accounts for.

CREATE TABLE knowledge_documents (
    id              bigserial PRIMARY KEY,
    tenant_id       bigint      NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    title           text        NOT NULL DEFAULT '',
    body            text        NOT NULL DEFAULT '',
    source          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    version         bigint      NOT NULL DEFAULT 1,
    indexed_version bigint,
    indexed_chunks  integer     NOT NULL DEFAULT 0,
    indexed_at      timestamptz,
    failed_version  bigint,
    index_error     text
);
CREATE INDEX knowledge_documents_tenant ON knowledge_documents (tenant_id);
-- The indexer's work list: rows whose current version is neither indexed nor known to fail.
CREATE INDEX knowledge_documents_pending ON knowledge_documents (id)
    WHERE indexed_version IS DISTINCT FROM version AND failed_version IS DISTINCT FROM version;

CREATE FUNCTION knowledge_documents_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.tenant_id, NEW.title, NEW.body, NEW.source, NEW.deleted_at, NEW.updated_at)
       IS DISTINCT FROM (OLD.tenant_id, OLD.title, OLD.body, OLD.source, OLD.deleted_at, OLD.updated_at) THEN
        NEW.version := OLD.version + 1;
        -- Writers that do not maintain updated_at still get it right.
        IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
            NEW.updated_at := now();
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER knowledge_documents_changed BEFORE UPDATE ON knowledge_documents
    FOR EACH ROW EXECUTE FUNCTION knowledge_documents_changed();

-- Rows deleted with DELETE (or with their tenant) whose points are still in Qdrant: the indexer removes
-- "chunks" points of each and then the row here.
CREATE TABLE knowledge_deletions (
    document_id bigint      PRIMARY KEY,
    chunks      integer     NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION knowledge_documents_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.indexed_chunks > 0 THEN
        INSERT INTO knowledge_deletions (document_id, chunks) VALUES (OLD.id, OLD.indexed_chunks)
        ON CONFLICT (document_id) DO UPDATE SET chunks = greatest(knowledge_deletions.chunks, EXCLUDED.chunks);
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER knowledge_documents_deleted AFTER DELETE ON knowledge_documents
    FOR EACH ROW EXECUTE FUNCTION knowledge_documents_deleted();
