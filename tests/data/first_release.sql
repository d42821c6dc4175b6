-- A database written by Hamacho's first release (schema_info version 1, before Alembic), made with that
-- release's hamacho/serve/db.py; tests/test_serve_schema.py upgrades it in place.
BEGIN TRANSACTION;
CREATE TABLE images (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	stored VARCHAR(255) NOT NULL, 
	"group" VARCHAR(8) NOT NULL, 
	tag VARCHAR(128), 
	width INTEGER NOT NULL, 
	height INTEGER NOT NULL, 
	bytes INTEGER NOT NULL, 
	image_id INTEGER, 
	created_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (stored), 
	FOREIGN KEY(image_id) REFERENCES images (id) ON DELETE SET NULL
);
INSERT INTO "images" VALUES(1,'good1.png','images/aaaa.png','good','parts',64,64,100,NULL,'2026-11-01T10:00:00Z');
INSERT INTO "images" VALUES(2,'good2.png','images/bbbb.png','good','parts',64,64,100,NULL,'2026-11-01T10:00:01Z');
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	model_tag VARCHAR(128) NOT NULL, 
	model VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	phase VARCHAR(64) NOT NULL, 
	percent FLOAT NOT NULL, 
	error TEXT, 
	model_id INTEGER, 
	parameters TEXT NOT NULL, 
	image_ids TEXT NOT NULL, 
	counts TEXT NOT NULL, 
	cancel_requested BOOLEAN NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	started_at VARCHAR(32), 
	finished_at VARCHAR(32), 
	PRIMARY KEY (id)
);
INSERT INTO "jobs" VALUES(1,'line1','padim','succeeded','done',100.0,NULL,1,'{}','[1, 2]','{"good": 2}',0,'2026-11-01T10:30:00Z','2026-11-01T10:30:01Z','2026-11-01T11:00:00Z');
INSERT INTO "jobs" VALUES(2,'line2','padim','queued','',0.0,NULL,NULL,'{}','[1, 2]','{"good": 2}',0,'2026-11-02T09:00:00Z',NULL,NULL);
CREATE TABLE models (
	id INTEGER NOT NULL, 
	tag VARCHAR(128) NOT NULL, 
	model VARCHAR(64) NOT NULL, 
	display_name VARCHAR(64) NOT NULL, 
	backbone VARCHAR(64) NOT NULL, 
	image_size VARCHAR(32) NOT NULL, 
	format VARCHAR(32) NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	folder VARCHAR(255) NOT NULL, 
	entry VARCHAR(255) NOT NULL, 
	job_id INTEGER, 
	summary TEXT NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (tag)
);
INSERT INTO "models" VALUES(1,'line1','padim','PaDiM','resnet18','64','model.pt','trained','models/cccc','model.pt',1,'{}','2026-11-01T11:00:00Z');
CREATE TABLE results (
	id INTEGER NOT NULL, 
	model_id INTEGER NOT NULL, 
	folder VARCHAR(255) NOT NULL, 
	data TEXT NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(model_id) REFERENCES models (id) ON DELETE CASCADE
);
INSERT INTO "results" VALUES(1,1,'predictions/dddd','{"score": 0.42}','2026-11-01T12:00:00Z');
CREATE TABLE schema_info (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "schema_info" VALUES(1,1);
CREATE INDEX ix_images_tag ON images (tag);
CREATE INDEX ix_images_group ON images ("group");
CREATE INDEX ix_jobs_model_tag ON jobs (model_tag);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_results_model_id ON results (model_id);
COMMIT;
