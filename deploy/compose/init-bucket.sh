#!/bin/sh
# One-shot MinIO setup for the compose stack (service `minio-init`, image minio/mc).
#
# Creates the private image bucket and an application user whose policy reaches that
# bucket only, so the workers never hold the MinIO root credentials. Every step is
# idempotent: the job runs on each `docker compose up` and must succeed again.
set -eu

: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is required}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is required}"
: "${FACEAUTH_S3_ACCESS_KEY:?FACEAUTH_S3_ACCESS_KEY is required}"
: "${FACEAUTH_S3_SECRET_KEY:?FACEAUTH_S3_SECRET_KEY is required}"
: "${FACEAUTH_S3_BUCKET:?FACEAUTH_S3_BUCKET is required}"
MINIO_URL="${MINIO_URL:-http://minio:9000}"
POLICY=faceauth-images-rw

# The root secret goes through the environment of this short-lived container only.
mc alias set faceauth "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing "faceauth/$FACEAUTH_S3_BUCKET"
# Face images are biometric data: never readable without credentials.
mc anonymous set none "faceauth/$FACEAUTH_S3_BUCKET"

# The minio/mc image is minimal (no grep), so only sh builtins and coreutils are used below.
policy_file=/tmp/faceauth-policy.json
cat >"$policy_file" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
      "Resource": ["arn:aws:s3:::${FACEAUTH_S3_BUCKET}"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      "Resource": ["arn:aws:s3:::${FACEAUTH_S3_BUCKET}/*"]
    }
  ]
}
EOF
# `policy create` replaces an existing policy of the same name, so edits here roll out.
mc admin policy create faceauth "$POLICY" "$policy_file"
# `user add` on an existing user only resets its secret to the value from .env.
mc admin user add faceauth "$FACEAUTH_S3_ACCESS_KEY" "$FACEAUTH_S3_SECRET_KEY"
# Attaching a policy that is already attached is an error in mc, hence the check.
user_info="$(mc admin user info faceauth "$FACEAUTH_S3_ACCESS_KEY")"
case "$user_info" in
    *"$POLICY"*) ;;
    *) mc admin policy attach faceauth "$POLICY" --user "$FACEAUTH_S3_ACCESS_KEY" ;;
esac
echo "minio-init: bucket '$FACEAUTH_S3_BUCKET' and user '$FACEAUTH_S3_ACCESS_KEY' ready"
